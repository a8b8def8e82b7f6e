"""Preference pairs, shared by the reward-model and DPO stages (and, for its batching, KTO).

A pair is a prompt (messages) and two replies to it, one preferred ("chosen") over the other
("rejected"). Both replies are rendered as the same conversation with a different last turn:

    <|im_start|>user\\nWhat is 2+3?<|im_end|>\\n<|im_start|>assistant\\n5<|im_end|>\\n        chosen
    <|im_start|>user\\nWhat is 2+3?<|im_end|>\\n<|im_start|>assistant\\n6<|im_end|>\\n        rejected
                                                                 ^^^^^^^^^^ response mask

A micro-batch is one tensor of rows: its B chosen sequences, then its B rejected ones, right
padded to a common length, so one forward pass scores both sides:

    ids       (2B, T)  token ids (padding: 0)
    response  (2B, T)  True on the reply's tokens (its content and <|im_end|>) only
    lengths   (2B,)    real tokens per row; row r's last token is ids[r, lengths[r] - 1]

Batches are a function of (seed, step), like pretraining's, so a resumed run sees exactly the
pairs the uninterrupted run would have.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from groklm.data.chat_data import load_preferences_jsonl
from groklm.errors import CheckpointError, ConfigError, DataError
from groklm.model.config import GPTConfig
from groklm.rundir import TOKENIZER_DIR, RunDir, read_config
from groklm.tasks import make_preferences
from groklm.tasks.preference_sets import make_harmless_preferences, make_helpful_preferences
from groklm.tokenizer.chat import render_chat
from groklm.tokenizer.load import load_tokenizer
from groklm.train.config import TrainConfig, split_overrides
from groklm.train.stage import Place, open_run, run_stage

SYNTHETIC = "synthetic"
# --data names of synthetic pair sets: the tasks' own pairs, and Llama 2's two reward models' sets
SYNTHETIC_SETS = {SYNTHETIC: make_preferences, "synthetic-helpful": make_helpful_preferences,
                  "synthetic-harmless": make_harmless_preferences}
SYNTHETIC_TRAIN, SYNTHETIC_VAL = 1000, 200  # pairs per task
VAL_FRACTION = 0.1  # of a file's pairs, held out when no --val file is given

# ---- data -----------------------------------------------------------------------------------


def load_pairs(spec: str, val: str | None = None, skip_bad_lines: bool = False, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train pairs, held-out pairs) from a synthetic set ("synthetic", "synthetic-helpful",
    "synthetic-harmless", each with optional ":task1,task2") or a JSONL file.

    Synthetic data has its own test split. From a file, `val` (another file) is the held-out
    set, or else a seeded tenth of the file is held out."""
    kind, _, names = spec.partition(":")
    if kind in SYNTHETIC_SETS:
        tasks = [t.strip() for t in names.split(",") if t.strip()] or None
        make = SYNTHETIC_SETS[kind]
        return make(tasks, SYNTHETIC_TRAIN, "train", seed), make(tasks, SYNTHETIC_VAL, "test", seed)
    pairs = load_preferences_jsonl(spec, skip_bad_lines)
    if val is not None:
        return pairs, load_preferences_jsonl(val, skip_bad_lines)
    return hold_out(pairs, spec, "pair", seed)


def hold_out(records: list, spec: str, what: str, seed: int) -> tuple[list, list]:
    """(train, held out): a seeded tenth of a file's records (at least one) held out for
    validation, for a preference stage given no --val file. `what` names a record, for the message."""
    if len(records) < 2:
        raise DataError(f"{spec} has {len(records)} {what}; need at least 2 to hold one out for validation (or pass --val FILE)")
    order = np.random.default_rng(seed).permutation(len(records))
    n_val = max(1, int(len(records) * VAL_FRACTION))
    return [records[i] for i in order[n_val:]], [records[i] for i in order[:n_val]]


def encode_reply(tokenizer, prompt: list[dict], reply: str) -> tuple[list[int], list[bool]]:
    """Token ids of prompt + the assistant's reply, and True on the reply's own tokens only.

    render_chat marks every assistant turn as trained; a multi-turn prompt has earlier
    assistant turns, which are context here, so only tokens past the prompt count."""
    n_prompt = len(render_chat(tokenizer, prompt)[0])
    ids, trained = render_chat(tokenizer, [*prompt, {"role": "assistant", "content": reply}])
    return ids, [t and i >= n_prompt for i, t in enumerate(trained)]


def encode_pairs(tokenizer, pairs: list[dict], block_size: int, where: str = "data") -> list[tuple]:
    """[(chosen ids, chosen mask, rejected ids, rejected mask)], dropping pairs longer than
    block_size (with one warning): cutting one would cut the very reply being judged."""
    encoded, too_long = [], 0
    for i, pair in enumerate(pairs):
        if not isinstance(pair, dict) or not all(k in pair for k in ("prompt", "chosen", "rejected")):
            raise DataError(f"{where}: pair {i} needs 'prompt', 'chosen' and 'rejected'")
        if not isinstance(pair["chosen"], str) or not isinstance(pair["rejected"], str):
            raise DataError(f"{where}: pair {i}: 'chosen' and 'rejected' must be strings (the assistant's replies)")
        chosen = encode_reply(tokenizer, pair["prompt"], pair["chosen"])
        rejected = encode_reply(tokenizer, pair["prompt"], pair["rejected"])
        if max(len(chosen[0]), len(rejected[0])) > block_size:
            too_long += 1
            continue
        encoded.append((*chosen, *rejected))
    if too_long:
        warnings.warn(f"{where}: skipped {too_long} of {len(pairs)} pairs longer than block_size={block_size} tokens", stacklevel=2)
    if not encoded:
        raise DataError(f"{where}: no pair fits in block_size={block_size} tokens")
    return encoded


def collate(encoded: list[tuple]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs -> (ids, response, lengths): chosen rows first, then rejected, right padded."""
    rows = [(e[0], e[1]) for e in encoded] + [(e[2], e[3]) for e in encoded]
    T = max(len(ids) for ids, _ in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    response = torch.zeros(len(rows), T, dtype=torch.bool)
    for r, (row_ids, row_mask) in enumerate(rows):
        ids[r, : len(row_ids)] = torch.tensor(row_ids)
        response[r, : len(row_mask)] = torch.tensor(row_mask)
    lengths = torch.tensor([len(row_ids) for row_ids, _ in rows])
    return ids, response, lengths


def make_pair_batches(encoded: list[tuple], cfg: TrainConfig, collate_fn=collate):
    """batches(step, micros): step's global batch is the next batch_size * grad_accum pairs of a
    stream that walks the data in a fresh seeded order every epoch; micro m is its m-th slice,
    made into tensors by collate_fn (KTO's unpaired examples pass their own)."""
    n, per_step = len(encoded), cfg.batch_size * cfg.grad_accum

    @functools.lru_cache(maxsize=4)  # consecutive pairs nearly always share an epoch
    def epoch_order(epoch: int) -> np.ndarray:
        return np.random.default_rng([cfg.seed, epoch]).permutation(n)

    def pair_at(k: int) -> tuple:  # the k-th pair of the stream
        return encoded[epoch_order(k // n)[k % n]]

    def batches(step: int, micros: range):
        for m in micros:
            first = step * per_step + m * cfg.batch_size
            yield collate_fn([pair_at(k) for k in range(first, first + cfg.batch_size)])

    return batches


def make_pair_val_batch(encoded: list[tuple], cfg: TrainConfig, collate_fn=collate):
    """val_batch(i): the i-th run of batch_size held-out pairs (wrapping round), fixed."""
    def val_batch(i: int):
        return collate_fn([encoded[(i * cfg.batch_size + j) % len(encoded)] for j in range(cfg.batch_size)])

    return val_batch


# ---- log-probabilities ----------------------------------------------------------------------


def token_logps(model, ids: torch.Tensor) -> torch.Tensor:
    """(N, T) ids -> (N, T) log p(ids[t] | ids[:t]) under the model; position 0 (nothing
    predicts it) is 0. Computed in fp32: a sum of many small log-probs needs the precision."""
    logits, _ = model(ids)
    logps = F.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return F.pad(logps, (1, 0))


def sequence_logps(model, ids: torch.Tensor, response: torch.Tensor, average: bool = False) -> torch.Tensor:
    """log p(reply | prompt) = the sum of the reply tokens' log-probs, one per row (N,).

    average: divide by the reply's length (IPO's length-normalised log-probs)."""
    total = (token_logps(model, ids) * response).sum(dim=1)
    return total / response.sum(dim=1).clamp(min=1) if average else total


# ---- the run directory ----------------------------------------------------------------------


def open_pair_run(out, stage: str, defaults: dict, overrides: dict, resume: bool) -> tuple[RunDir, TrainConfig, dict | None]:
    """(the run directory, its TrainConfig, the saved config on resume or None)."""
    run, saved = open_run(out, stage, resume)
    return run, pair_train_config(stage, saved["train"] if saved else defaults, overrides), saved


def pair_train_config(stage: str, train: dict, overrides: dict) -> TrainConfig:
    """`train` (the defaults, or a resumed run's saved settings) with `overrides` applied. Only
    training keys can be set: the model's shape is the base run's."""
    model_over, train_over = split_overrides(overrides, GPTConfig)
    if model_over:
        raise ConfigError(f"the model comes from the base run; cannot set {sorted(model_over)} in a {stage} run")
    return TrainConfig.from_dict({**train, **train_over})


def resolve_base(run, saved: dict | None) -> tuple[Path, dict]:
    """(the base run's path, its model config). The base must be a plain GPT run (pretrained,
    SFT or DPO); on resume it is the saved one."""
    if saved:
        return Path(run or saved["parent"]), saved["model"]
    if run is None:
        raise ConfigError("name the GPT run to start from: groklm <stage> RUN --data ... --out DIR")
    config = read_config(run)
    if "lora" in config:
        raise CheckpointError(f"{run} is a LoRA run (adapters only): merge it first "
                              f"(groklm merge {run} --out MERGED) and start from the merged run")
    if config["arch"] != "gpt":
        raise CheckpointError(f"{run} holds a {config['arch']!r} model; start from a GPT run (pretrain, sft or dpo)")
    if not (Path(run) / TOKENIZER_DIR).is_dir():
        raise CheckpointError(f"{run} has no {TOKENIZER_DIR}/; preference stages need its tokenizer to render chats")
    return Path(run), config["model"]


def resolve_data(data: str | None, val: str | None, saved: dict | None, stage: str) -> tuple[str, str | None]:
    """(data spec, val file), files as absolute paths so that resume finds them from anywhere."""
    saved_data = (saved or {}).get("data", {})
    data, val = data or saved_data.get("spec"), val or saved_data.get("val")
    if not data:
        raise ConfigError(f"{stage} training needs --data FILE.jsonl or --data synthetic[:tasks]")
    if not data.startswith(SYNTHETIC):
        data = str(Path(data).resolve())
    return data, str(Path(val).resolve()) if val else None


def train_on_pairs(run: RunDir, base: Path, config: dict, cfg: TrainConfig, build, skip_bad_lines: bool, resume: bool,
                   progress: bool) -> Path:
    """The part every preference stage shares: read and encode the pairs, then the stage
    scaffold (config.json written by rank 0 with the base run's tokenizer, the shared loop, the
    weights and the loss plot).

    config: the keys of RunDir.write_config. build(device) -> (model to train and save, its
    loss_fn), called after seeding."""
    tokenizer = load_tokenizer(run.tokenizer_dir if resume else base / TOKENIZER_DIR)
    train_pairs, val_pairs = load_pairs(config["data"]["spec"], config["data"]["val"], skip_bad_lines, cfg.seed)
    block_size = config["model"]["block_size"]
    train_set = encode_pairs(tokenizer, train_pairs, block_size, "training pairs")
    val_set = encode_pairs(tokenizer, val_pairs, block_size, "held-out pairs")
    mean_length = sum(len(p[0]) + len(p[2]) for p in train_set) / len(train_set)

    def setup(place: Place):
        model, loss_fn = build(place.device)
        return place.setup(model, make_pair_batches(train_set, cfg), make_pair_val_batch(val_set, cfg),
                           tokens_per_micro=round(cfg.batch_size * mean_length), loss_fn=loss_fn)

    return run_stage(run, config, cfg, setup, resume=resume, progress=progress, tokenizer=base / TOKENIZER_DIR)


def check_finite(name: str, value: float, low: float = 0.0, high: float | None = None) -> float:
    value = float(value)
    if not np.isfinite(value) or value < low or (high is not None and value >= high):
        bound = f"[{low}, {high})" if high is not None else f">= {low}"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value}")
    return value
