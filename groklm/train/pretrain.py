"""Pretraining: next-token prediction on token shards, from random weights to a base model.

    data dir (train.bin, val.bin, tokenizer/) ──► GPT ──► run dir (config.json, model.safetensors,
                                                           tokenizer/, metrics.jsonl, checkpoint/, loss.png)

Every step trains on batch_size * grad_accum random windows of block_size tokens; the loss is
the cross-entropy of each next token. See loop.py for the step itself. `--set arch=rnn|lstm|gru|mamba|rwkv|jamba`
trains a recurrent or state-space model (groklm/model/rnn.py, mamba.py, rwkv.py, jamba.py) the
same way instead; config.json's "arch" says which.

Continued pretraining (`--init-from RUN`) starts from a GPT run's weights instead of random ones:
the run's shape, on the user's text prepared with the run's own tokenizer. With `--set lora_rank=N`
it trains only LoRA adapters on the frozen run (groklm/model/lora.py), and the new run stores only
them plus a hashed reference to RUN, as a LoRA sft run does (stage.resolve_lora).

Sequence parallelism (`torchrun --nproc_per_node=N -m groklm pretrain ... --sequence-parallel`)
splits every sequence into N contiguous slices, one per process, for sequences too long for one
device's activation memory: all processes draw the same batches, each keeps its slice of the
inputs and targets with their positions, and ring attention (groklm/model/ring_attention.py)
lets each slice's queries see the earlier slices' keys. Each process's loss is the mean over
its slice; the slices are equal, so the mean of the N losses is the loss of the whole sequences
and DDP's average of the N gradients is its gradient: the run takes the steps one process
would take on the whole sequences.
"""

from __future__ import annotations

import os
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch

from groklm.data.manifest import copy_manifest
from groklm.data.shards import TokenShards, batch_offsets, get_batch
from groklm.errors import CheckpointError, ConfigError, DataError
from groklm.model.arch import build_model, check_arch, config_class, make_config
from groklm.model.attention import set_sequence_parallel
from groklm.model.lora import apply_lora_section
from groklm.model.moe import moe_loss
from groklm.model.weights import load_weights
from groklm.rundir import TOKENIZER_DIR, WEIGHTS_FILE, read_config
from groklm.tokenizer import load_tokenizer
from groklm.train.config import TrainConfig, split_overrides
from groklm.train.config import preset as preset_values
from groklm.train.distributed import Distributed
from groklm.train.loop import Batch, language_model_loss
from groklm.train.sft import resolve_config as resolve_base_config
from groklm.train.stage import Place, check_start_run, open_run, resolve_lora, run_stage

STAGE = "pretrain"
VOCAB_MULTIPLE = 64  # matmuls over a vocab padded to a multiple of 64 run faster on GPUs


def pretrain(
    data_dir: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    preset: str | None = None,
    overrides: dict | None = None,
    resume: bool = False,
    progress: bool = True,
    init_from: str | os.PathLike | None = None,
) -> Path:
    """Train a GPT (or, with overrides["arch"], an RNN/LSTM/GRU) on prepared data into the run
    directory `out_dir`; returns its path.

    overrides: {key: value} for any GPTConfig (RNNConfig) or TrainConfig field (strings are parsed by type).
    resume: continue `out_dir` from its checkpoint (data_dir may then be None: the saved one).
    init_from: a GPT run to continue pretraining (its weights, its shape; the data must be made
    with its tokenizer). overrides["lora_rank"] then trains LoRA adapters on it instead.
    """
    run, saved = open_run(out_dir, STAGE, resume)
    if saved is not None:
        if init_from is not None:
            raise ConfigError(f"{run.path} already says where it started; resume it without --init-from")
        init_from = saved.get("parent")  # None: a run pretrained from random weights
    base = Path(init_from) if init_from is not None else None
    arch, model_cfg, train_cfg, data_dir, preset = resolve_config(data_dir, run.path, saved, preset, overrides or {},
                                                                  base)
    shards = TokenShards(data_dir)
    if base is not None and saved is None:
        check_init_run(base, shards, run.path)  # first: another tokenizer is the likelier cause of a bad vocab
    check_data(shards, model_cfg, data_dir)
    if train_cfg.sequence_parallel:
        check_sequence_parallel(arch, model_cfg, Distributed.from_env().world_size)
    if base is None and train_cfg.lora_rank:
        raise ConfigError("LoRA trains adapters on an existing model, not on random weights: "
                          "add --init-from RUN (the run to adapt), or leave out lora_rank")
    lora = resolve_lora(train_cfg, base, saved, run.path, model_cfg) if base is not None else None
    config = {"stage": STAGE, "parent": str(base.resolve()) if base is not None else None, "arch": arch,
              "model": model_cfg.to_dict(), "train": train_cfg.to_dict(),
              "data": {"dir": str(shards.dir.resolve()), "meta": shards.meta}, STAGE: {"preset": preset}}
    if lora is not None:
        config["lora"] = lora
    tokenizer = shards.dir / TOKENIZER_DIR

    def build(place: Place):
        if place.dist.is_main and not resume:  # the data's provenance travels with the model
            copy_manifest(shards.dir, run.path)
        model = build_model(arch, model_cfg)
        # On resume the checkpoint brings the weights, except for LoRA: it holds only the adapters.
        if base is not None and (not resume or lora is not None):
            load_weights(model, base / WEIGHTS_FILE)
        model.to(place.device)
        if lora is not None:  # freeze the run's weights, wrap the target layers (adapters in float32)
            apply_lora_section(model, lora)
        if place.dist.is_main:
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            start = f"from {base}" if base is not None else "from random weights"
            print(f"{arch.upper()} {start}: {model.num_params():,} parameters ({model.num_params(non_embedding=True):,} "
                  f"without embeddings, {trainable:,} trained), {place.dist.world_size} process(es) on {place.device}",
                  file=sys.stderr, flush=True)
        batches = make_batches(shards.train, train_cfg, model_cfg.block_size)
        val_batch = make_val_batch(shards.val, train_cfg, model_cfg.block_size)
        loss_fn = loss_function(model_cfg)
        if train_cfg.sequence_parallel:
            set_sequence_parallel(model, place.dist.sequence_group())
            place = replace(place, dist=replace(place.dist, sequence_parallel=True))
            batches, val_batch = sequence_slices(batches, val_batch, place.dist)
            loss_fn = sequence_slice_loss
        return place.setup(model, batches, val_batch, tokens_per_micro=train_cfg.batch_size * model_cfg.block_size,
                           loss_fn=loss_fn)

    return run_stage(run, config, train_cfg, build, resume=resume, progress=progress,
                     tokenizer=tokenizer if tokenizer.is_dir() else None)


def resolve_config(data_dir, out: Path, saved: dict | None, preset: str | None, overrides: dict,
                   init_from: Path | None = None):
    """(arch, model config, TrainConfig, data dir, preset): from preset + overrides, from the
    run `init_from` continues (its model, TrainConfig's defaults) + overrides, or from the
    saved config of the run being resumed."""
    overrides = dict(overrides)
    if init_from is not None and saved is None:
        if data_dir is None:
            raise ConfigError("continued pretraining needs --data DIR (made by `groklm data prepare` "
                              f"with --tokenizer {init_from / TOKENIZER_DIR})")
        if preset is not None or overrides.get("arch", "gpt") != "gpt":
            raise ConfigError(f"--init-from {init_from} takes that run's model: leave out --preset and --set arch=")
        overrides.pop("arch", None)
        model_values, train_cfg = resolve_base_config(read_config(init_from), overrides, {})
        return "gpt", make_config("gpt", model_values), train_cfg, data_dir, None
    arch = check_arch(str(overrides.pop("arch", (saved or {}).get("arch", "gpt"))))
    model_over, train_over = split_overrides(overrides, config_class(arch))
    if saved:
        if arch != saved["arch"]:
            raise ConfigError(f"{out} holds a {saved['arch']!r} model; resume it without --set arch={arch}")
        saved_preset = saved.get(STAGE, {}).get("preset")
        if preset is not None and preset != saved_preset:
            raise ConfigError(f"{out} was trained with preset {saved_preset!r}; resume it without --preset {preset}")
        changed = {k: v for k, v in model_over.items() if saved["model"].get(k) != v}
        if changed:
            raise ConfigError(f"the model's shape is fixed once trained; cannot change {sorted(changed)} on resume")
        train_cfg = TrainConfig.from_dict({**saved["train"], **train_over})
        return arch, make_config(arch, saved["model"]), train_cfg, data_dir or saved["data"]["dir"], saved_preset
    if data_dir is None:
        raise ConfigError("pretraining needs --data DIR (made by `groklm data prepare`)")
    preset_model, preset_train = preset_values(preset)
    if arch != "gpt":  # presets describe GPTs: a recurrent model takes the sizes they share
        shared = {f.name for f in fields(config_class(arch))}
        preset_model = {k: v for k, v in preset_model.items() if k in shared}
    model_values = {**preset_model, **model_over}
    if "vocab_size" not in model_values:
        vocab = TokenShards(data_dir).vocab_size
        model_values["vocab_size"] = -(-vocab // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    train_cfg = TrainConfig.from_dict({**preset_train, **train_over})
    return arch, make_config(arch, model_values), train_cfg, data_dir, preset


def loss_function(model_cfg):
    """The next-token loss; a mixture-of-experts GPT's also logs its experts' utilisation."""
    return moe_loss if getattr(model_cfg, "moe_experts", 0) else language_model_loss


def check_sequence_parallel(arch: str, model_cfg, world: int) -> None:
    """Sequence parallelism splits each sequence of a GPT into `world` equal slices, one per
    process: refuse what it cannot split, before any process joins the others."""
    if world == 1:
        raise ConfigError("sequence_parallel splits each sequence among the processes torchrun starts, and this is "
                          "one process: launch with `torchrun --nproc_per_node=N -m groklm pretrain ...`, or leave it "
                          "out (resuming such a run on one process: --set sequence_parallel=false)")
    if arch != "gpt":
        raise ConfigError(f"sequence_parallel splits a transformer's attention (arch=gpt), not arch={arch}")
    if model_cfg.block_size % world:
        raise ConfigError(f"sequence_parallel gives each process an equal slice of every sequence: block_size="
                          f"{model_cfg.block_size} does not divide among {world} processes; make it a multiple of {world}")
    if model_cfg.dropout:
        raise ConfigError("ring attention has no attention dropout: set dropout=0 with sequence_parallel")
    # Both route or balance over whole sequences and batches, where each process sees only its slice.
    # (mod_capacity: mixture of depths; getattr, as a model config may not have it.)
    if model_cfg.moe_experts or getattr(model_cfg, "mod_capacity", 0):
        raise ConfigError("sequence_parallel cannot split a mixture of experts or of depths: their balancing and "
                          "routing work on whole sequences; leave out moe_experts / mod_capacity")


def sequence_slices(batches, val_batch, dist: Distributed):
    """The stage's (batches, val_batch) of whole sequences -> the same with this process's slice
    of each sequence: (inputs, targets, positions), positions counted from the sequence's start."""
    def slice_of(batch: Batch) -> Batch:
        inputs, targets = batch
        rows, length = inputs.shape
        size = length // dist.world_size
        start = dist.rank * size
        positions = torch.arange(start, start + size).repeat(rows, 1)
        return inputs[:, start : start + size].contiguous(), targets[:, start : start + size].contiguous(), positions

    def sliced_batches(step: int, micros: range):
        return map(slice_of, batches(step, micros))

    return sliced_batches, lambda i: slice_of(val_batch(i))


def sequence_slice_loss(model, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss_fn under sequence parallelism: the mean next-token loss over this process's slice.
    Every slice holds the same number of targets (pretraining ignores none), so the mean of the
    processes' losses is the whole batch's, and DDP's gradient average is that loss's gradient."""
    inputs, targets, positions = batch
    _, loss = model(inputs, targets, positions=positions)
    return loss, {}


def check_init_run(base: Path, shards: TokenShards, out: Path) -> None:
    """The run continued must be a plain GPT run with weights, other than the new run, whose
    tokenizer made the data: the ids must mean to it what they meant when the data was made."""
    check_start_run(base, out, "continue")
    for folder in (base / TOKENIZER_DIR, shards.dir / TOKENIZER_DIR):
        if not folder.is_dir():
            raise CheckpointError(f"{folder} does not exist: continued pretraining compares the data's "
                                  "tokenizer with the run's")
    if token_table(load_tokenizer(base / TOKENIZER_DIR)) != token_table(load_tokenizer(shards.dir / TOKENIZER_DIR)):
        raise ConfigError(f"{shards.dir} was encoded with another tokenizer than {base}'s, so its ids would mean "
                          f"other tokens to the model: prepare it again with `groklm data prepare ... "
                          f"--tokenizer {base / TOKENIZER_DIR}`")


def token_table(tokenizer) -> tuple:
    """What a tokenizer's ids mean: the text of every id, and the end-of-text id. Two tokenizers
    with equal tables read every prepared shard the same way."""
    return tokenizer.eot_id, tuple(tokenizer.decode_bytes([i]) for i in range(tokenizer.vocab_size))


def check_data(shards: TokenShards, config, data_dir) -> None:
    if shards.vocab_size > config.vocab_size:
        raise ConfigError(
            f"the data's tokenizer has {shards.vocab_size} tokens but the model's vocab_size is "
            f"{config.vocab_size}; leave vocab_size unset (it follows the data) or raise it"
        )
    for split, tokens in (("train", shards.train), ("val", shards.val)):
        if len(tokens) <= config.block_size:
            hint = "raise --val-fraction in `groklm data prepare`" if split == "val" else "add more text"
            raise DataError(
                f"{data_dir} has {len(tokens)} {split} tokens, fewer than one block of "
                f"block_size+1={config.block_size + 1}; {hint}, or lower block_size (--set block_size=N)"
            )


def make_batches(tokens: np.ndarray, cfg: TrainConfig, block_size: int):
    """Step `step`'s global batch is batch_size * grad_accum windows drawn from (seed, step);
    micro-batch m is its m-th slice of batch_size windows. Each process asks for its own m's.
    cfg.train_tokens > 0 draws the windows from the first train_tokens tokens only."""
    if cfg.train_tokens:
        if cfg.train_tokens <= block_size:
            raise ConfigError(f"train_tokens={cfg.train_tokens} holds no window of block_size+1={block_size + 1} tokens")
        tokens = tokens[: cfg.train_tokens]

    def batches(step: int, micros: range):
        offsets = batch_offsets(cfg.seed, step, cfg.grad_accum * cfg.batch_size, len(tokens), block_size)
        for m in micros:
            yield get_batch(tokens, offsets[m * cfg.batch_size : (m + 1) * cfg.batch_size], block_size)

    return batches


def make_val_batch(tokens: np.ndarray, cfg: TrainConfig, block_size: int):
    def val_batch(i: int):
        return get_batch(tokens, batch_offsets(cfg.seed, i, cfg.batch_size, len(tokens), block_size, stream=1), block_size)

    return val_batch
