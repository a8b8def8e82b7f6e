"""Supervised fine-tuning (SFT): from a model that continues text to one that answers in turns.

    base run (any stage) ─┐
    chats (JSONL/synth) ──┴► render chats ───► mask all but the assistant ──► pack rows ──► train
                                                                            ──► run dir, "stage": "sft"

The model, its shape and its tokenizer come from the base run; only the data and the loss
mask change. The loss is the same next-token cross-entropy as in pretraining, over the tokens
the assistant says (and the stop token that ends its turn, ChatML's <|im_end|>): the prompt is
context, not a target. Chats are rendered in the base run's chat format: its own template, or
groklm's ChatML (tokenizer/chat.py).
"""

from __future__ import annotations

import os
import random
import sys
import warnings
from pathlib import Path

from groklm.data.chat_data import load_sft_jsonl
from groklm.errors import CheckpointError, ConfigError, DataError, GroklmError
from groklm.model import GPT, GPTConfig
from groklm.model.gpt import IGNORE_INDEX
from groklm.model.lora import apply_lora_section
from groklm.model.weights import load_weights
from groklm.rundir import TOKENIZER_DIR, WEIGHTS_FILE, read_config
from groklm.tasks import make_sft
from groklm.tokenizer import load_tokenizer
from groklm.tokenizer.chat import check_chat_embeddings, check_chat_template, render_chat
from groklm.train.config import TrainConfig, split_overrides
from groklm.train.packing import batch_rows, conversation_example, pack
from groklm.train.stage import Place, check_start_run, open_run, resolve_lora, run_stage

STAGE = "sft"
# Fine-tuning nudges weights that already know the language: a lower peak learning rate than
# pretraining (big steps would wash out what the base model knows), a short warmup (Adam's
# moments start at zero, so the first steps are noisy even on a good model), and far fewer
# steps. No weight decay: the run is short, and decay only pulls the base weights towards zero.
SFT_DEFAULTS = dict(batch_size=8, max_iters=300, lr=3e-4, min_lr=3e-5, warmup_iters=20, weight_decay=0.0,
                    eval_interval=50, eval_iters=10, log_interval=10)
VAL_FRACTION = 0.05  # conversations held out for val_loss when no validation file is given
SYNTHETIC = "synthetic"  # --data synthetic[:task,task]: groklm's own checkable chat tasks
IN_MEMORY = "<records>"  # how config.json names data passed as a Python list
TUNABLE_MODEL_KEYS = ("dropout",)  # every other model field is the base run's shape


def sft(
    base_run: str | os.PathLike | None,
    data,
    out_dir: str | os.PathLike,
    overrides: dict | None = None,
    resume: bool = False,
    progress: bool = True,
    val_data=None,
    skip_bad_lines: bool = False,
    synthetic_n: int = 1000,
    synthetic_chatty: float = 0.0,
) -> Path:
    """Fine-tune the model of `base_run` on chats into the new run directory `out_dir`.

    data: a JSONL file of {"messages": [...]}, "synthetic" or "synthetic:task,task", or a list
    of {"messages": [...]} records. val_data: the same kinds, for val_loss (default: hold out
    5% of data; the synthetic tasks' test split for synthetic data). overrides: {key: value}
    for TrainConfig fields (and dropout). resume: continue `out_dir` exactly; base_run is then
    not needed, and data may be None (the saved data). synthetic_n: training chats per synthetic task;
    synthetic_chatty: the share of synthetic demonstrations written in a wordier style than the
    task asks for (see groklm.tasks; the speedrun uses it so that alignment has a behaviour to fix).
    Returns the run directory.
    """
    run, saved = open_run(out_dir, STAGE, resume)
    if saved:
        # The run holds all it needs (its config, tokenizer copy, and weights in the checkpoint),
        # so the base run may since have moved; data not given again is the data it started with.
        base = Path(saved["parent"])
        saved_data = saved.get("data", {})
        data = data if data is not None else saved_data.get("train")
        val_data = val_data if val_data is not None else saved_data.get("val")
        skip_bad_lines = skip_bad_lines or saved_data.get("skip_bad_lines", False)
        synthetic_n = saved_data.get("synthetic_n", synthetic_n)
        synthetic_chatty = saved_data.get("synthetic_chatty", synthetic_chatty)
        model_cfg, train_cfg = resolve_config(saved, overrides or {}, saved["train"])
        tokenizer = load_tokenizer(run.tokenizer_dir)
    else:
        base = check_base_run(base_run, run.path)
        model_cfg, train_cfg = resolve_config(read_config(base), overrides or {}, SFT_DEFAULTS)
        tokenizer = load_tokenizer(base / TOKENIZER_DIR)
    model_cfg = GPTConfig.from_dict(model_cfg)
    # LoRA: the run will store adapters and a reference to the base (with its weights' hash).
    lora = resolve_lora(train_cfg, base, saved, run.path, model_cfg)
    check_tokenizer(tokenizer, model_cfg.vocab_size, base)
    train_rows, val_rows, data_info = build_rows(
        tokenizer, data, val_data, model_cfg.block_size, train_cfg.seed, skip_bad_lines, synthetic_n, synthetic_chatty)
    data_info["skip_bad_lines"] = skip_bad_lines
    config = {"stage": STAGE, "parent": base, "arch": "gpt", "model": model_cfg.to_dict(), "train": train_cfg.to_dict(),
              "data": data_info}
    if lora is not None:
        config["lora"] = lora

    def build(place: Place):
        # GPT.from_run, but built from this run's config: the base's shape, this run's dropout.
        model = GPT(model_cfg)
        if not resume or lora is not None:  # on resume the checkpoint holds the weights (or the adapters)
            load_weights(model, base / WEIGHTS_FILE)
        model.to(place.device)
        if lora is not None:  # freeze the base, wrap the target layers (adapters in float32, on the device)
            wrapped = apply_lora_section(model, lora)
            if place.dist.is_main:
                trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
                print(f"LoRA rank {lora['rank']} on {len(wrapped)} layers: {trainable:,} trainable parameters "
                      f"of {model.num_params():,}", file=sys.stderr, flush=True)
        if place.dist.is_main:
            print(f"SFT of {base}: {data_info['conversations']:,} chats in {len(train_rows):,} rows "
                  f"({data_info['fill']:.0%} full), {data_info['val_conversations']:,} val chats, "
                  f"{place.dist.world_size} process(es) on {place.device}", file=sys.stderr, flush=True)
        return place.setup(model, make_batches(train_rows, train_cfg), make_val_batch(val_rows, train_cfg),
                           tokens_per_micro=train_cfg.batch_size * model_cfg.block_size)

    return run_stage(run, config, train_cfg, build, resume=resume, progress=progress, tokenizer=base / TOKENIZER_DIR)


# ---- configuration ----------------------------------------------------------------------------


def check_base_run(base_run, out: Path) -> Path:
    if base_run is None:
        raise ConfigError("SFT needs a base run directory to start from (groklm sft RUN ...)")
    base = Path(base_run)
    check_start_run(base, out, "fine-tune")
    if not (base / TOKENIZER_DIR).is_dir():
        raise CheckpointError(f"{base} has no {TOKENIZER_DIR}/ directory; SFT needs the run's tokenizer to render chats")
    return base


def resolve_config(config: dict, overrides: dict, train_defaults: dict) -> tuple[dict, TrainConfig]:
    """(model config dict, TrainConfig): the model of `config` (the base run, or the run being
    resumed) and `train_defaults`, with overrides on top. The model's shape cannot change."""
    model_over, train_over = split_overrides(overrides, GPTConfig)
    model = dict(config["model"])
    if shorter_context(model, model_over.get("block_size")):
        tunable = {**model_over}  # rows of block_size tokens; the weights do not depend on it
    else:
        tunable = {k: v for k, v in model_over.items() if k in TUNABLE_MODEL_KEYS}
    fixed = sorted(k for k, v in model_over.items() if k not in tunable and model.get(k) != v)
    if fixed:
        raise ConfigError(f"the model's shape comes from the base run; cannot change {fixed} "
                          f"(of the model keys only {', '.join(TUNABLE_MODEL_KEYS)} can be set, and block_size "
                          "lowered for a model without a learned position table)")
    return {**model, **model_over}, TrainConfig.from_dict({**train_defaults, **train_over})


def shorter_context(model: dict, block_size) -> bool:
    """Whether `--set block_size=N` may shorten the context: an imported model's 8192 positions
    would pack rows far longer than a CPU's memory allows for backward, and with rotary (or no)
    positions the weights are the same at any length. A learned table has one row per position."""
    return block_size is not None and model.get("pos", "learned") != "learned" and 0 < block_size <= model["block_size"]


def check_tokenizer(tokenizer, vocab_size: int, base: Path) -> None:
    """The chat format must render a conversation, and the model needs an embedding row for each
    special token it uses (markup and stop tokens)."""
    check_chat_template(tokenizer)
    check_chat_embeddings(tokenizer, vocab_size, str(base))


# ---- data -------------------------------------------------------------------------------------


def load_records(data, skip_bad_lines: bool, split: str, synthetic_n: int, synthetic_chatty: float = 0.0) -> tuple[list, str]:
    """(records, how config.json names them) for a file, a synthetic spec or a list."""
    if isinstance(data, (list, tuple)):
        return list(data), IN_MEMORY
    if data is None:
        raise ConfigError("no SFT data: pass --data FILE.jsonl or --data synthetic[:task,task]")
    if data == IN_MEMORY:
        raise ConfigError("this run was trained on records passed from Python; pass them again to resume it")
    spec = str(data)
    if spec == SYNTHETIC or spec.startswith(SYNTHETIC + ":"):
        names = spec.partition(":")[2]
        tasks = [t.strip() for t in names.split(",") if t.strip()] if names else None
        n = synthetic_n if split == "train" else max(1, synthetic_n // 5)  # as `groklm data synth` splits
        return make_sft(tasks, n, split, chatty=synthetic_chatty), spec
    return load_sft_jsonl(spec, skip_bad_lines=skip_bad_lines), str(Path(spec).resolve())


def make_examples(tokenizer, records: list, block_size: int, source: str, skip_bad: bool) -> tuple[list, int]:
    """Render, mask and truncate every record; returns (examples, number truncated)."""
    examples, truncated, untrained, bad = [], 0, 0, 0
    for number, record in enumerate(records, start=1):
        try:
            if not isinstance(record, dict) or "messages" not in record:
                raise DataError('expected an object with a "messages" list')
            ids, trained = render_chat(tokenizer, record["messages"])
        except GroklmError as error:
            if not skip_bad:
                raise DataError(f"{source}, conversation {number}: {error} (--skip-bad-lines skips such records)") from None
            bad += 1
            continue
        example, cut = conversation_example(ids, trained, block_size)
        if all(t == IGNORE_INDEX for t in example[1]):
            untrained += 1  # no assistant token inside the block: nothing to learn from it
            continue
        truncated += cut
        examples.append(example)
    if bad:
        warnings.warn(f"{source}: skipped {bad} conversation(s) that could not be rendered", stacklevel=3)
    if truncated:
        warnings.warn(f"{source}: {truncated} of {len(records)} conversation(s) are longer than block_size+1="
                      f"{block_size + 1} tokens; truncated (their later tokens are not trained)", stacklevel=3)
    if untrained:
        warnings.warn(f"{source}: dropped {untrained} conversation(s) with no assistant token within the first "
                      f"{block_size + 1} tokens (nothing to train on)", stacklevel=3)
    if not examples:
        raise DataError(f"{source}: no usable conversation ({len(records)} read; each needs an assistant token within block_size)")
    return examples, truncated


def build_rows(tokenizer, data, val_data, block_size: int, seed: int, skip_bad: bool, synthetic_n: int,
               synthetic_chatty: float = 0.0):
    """(train rows, val rows, what config.json records about the data)."""
    records, spec = load_records(data, skip_bad, "train", synthetic_n, synthetic_chatty)
    records = list(records)
    random.Random(f"sft/{seed}").shuffle(records)  # packing order must not follow the file's order
    if val_data is not None:
        val_records, val_spec = load_records(val_data, skip_bad, "test", synthetic_n, synthetic_chatty)
    elif spec.startswith(SYNTHETIC):
        val_records, val_spec = load_records(spec, skip_bad, "test", synthetic_n, synthetic_chatty)
    else:
        if len(records) < 2:
            raise DataError(f"{spec}: {len(records)} conversation(s); need 2 or more to hold one out for "
                            "validation, or pass a validation file (--val)")
        n_val = max(1, round(VAL_FRACTION * len(records)))
        val_records, records, val_spec = records[:n_val], records[n_val:], None
    examples, truncated = make_examples(tokenizer, records, block_size, spec, skip_bad)
    val_examples, _ = make_examples(tokenizer, val_records, block_size, val_spec or f"{spec} (held out)", skip_bad)
    pad = tokenizer.eot_id
    train_rows, val_rows = pack(examples, block_size, pad), pack(val_examples, block_size, pad)
    info = {"train": spec, "val": val_spec, "conversations": len(examples), "val_conversations": len(val_examples),
            "rows": len(train_rows), "fill": round(train_rows.fill, 4), "truncated": truncated,
            "synthetic_n": synthetic_n, "synthetic_chatty": synthetic_chatty}
    return train_rows, val_rows, info


def make_batches(rows, cfg: TrainConfig):
    """Step `step`'s batch_size * grad_accum rows are a function of (seed, step); micro-batch m
    is its m-th slice of batch_size rows, as in pretraining."""
    def batches(step: int, micros: range):
        chosen = batch_rows(cfg.seed, step, cfg.grad_accum * cfg.batch_size, len(rows))
        for m in micros:
            yield rows.batch(chosen[m * cfg.batch_size : (m + 1) * cfg.batch_size])

    return batches


def make_val_batch(rows, cfg: TrainConfig):
    """The i-th validation batch: batch_size rows in order, wrapping around (the same every eval)."""
    def val_batch(i: int):
        return rows.batch([(i * cfg.batch_size + k) % len(rows) for k in range(cfg.batch_size)])

    return val_batch
