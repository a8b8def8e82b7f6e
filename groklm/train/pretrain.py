"""Pretraining: next-token prediction on token shards, from random weights to a base model.

    data dir (train.bin, val.bin, tokenizer/) ──► GPT ──► run dir (config.json, model.safetensors,
                                                           tokenizer/, metrics.jsonl, checkpoint/, loss.png)

Every step trains on batch_size * grad_accum random windows of block_size tokens; the loss is
the cross-entropy of each next token. See loop.py for the step itself. `--set arch=rnn|lstm|gru`
trains a recurrent model (groklm/model/rnn.py) the same way instead; config.json's "arch" says which.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np

from groklm.data.shards import TokenShards, batch_offsets, get_batch
from groklm.errors import ConfigError, DataError
from groklm.model.arch import build_model, check_arch, config_class, make_config
from groklm.rundir import CHECKPOINT_DIR, CONFIG_FILE, TOKENIZER_DIR, read_config, write_json
from groklm.train.config import TrainConfig, preset as preset_values, split_overrides

VOCAB_MULTIPLE = 64  # matmuls over a vocab padded to a multiple of 64 run faster on GPUs


def pretrain(
    data_dir: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    preset: str | None = None,
    overrides: dict | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Train a GPT (or, with overrides["arch"], an RNN/LSTM/GRU) on prepared data into the run
    directory `out_dir`; returns its path.

    overrides: {key: value} for any GPTConfig (RNNConfig) or TrainConfig field (strings are parsed by type).
    resume: continue `out_dir` from its checkpoint (data_dir may then be None: the saved one).
    """
    from groklm.train.distributed import Distributed
    from groklm.train.loop import Setup, resolve_device, train_and_save

    out = Path(out_dir)
    arch, model_cfg, train_cfg, data_dir, preset = resolve_config(data_dir, out, preset, overrides or {}, resume)
    shards = TokenShards(data_dir)
    check_data(shards, model_cfg, data_dir)
    dist = Distributed.from_env()
    device = resolve_device(train_cfg, dist.local_rank)
    dist.start(device)  # every check above has passed on every process before rank 0 writes
    try:
        if dist.is_main:
            write_run_dir(out, arch, model_cfg, train_cfg, shards, preset, fresh=not resume)
        seed_everything(train_cfg.seed)
        model = build_model(arch, model_cfg).to(device)
        if dist.is_main:
            print(f"{arch.upper()}: {model.num_params():,} parameters ({model.num_params(non_embedding=True):,} without "
                  f"embeddings), {dist.world_size} process(es) on {device}", file=sys.stderr, flush=True)
        setup = Setup(
            model=model,
            batches=make_batches(shards.train, train_cfg, model_cfg.block_size),
            val_batch=make_val_batch(shards.val, train_cfg, model_cfg.block_size),
            tokens_per_micro=train_cfg.batch_size * model_cfg.block_size,
            run_dir=out,
            dist=dist,
            device=device,
            loss_fn=loss_function(model_cfg),
        )
        train_and_save(train_cfg, setup, f"pretrain {out.name}", resume=resume, progress=progress)
    finally:
        dist.stop()
    return out


def resolve_config(data_dir, out: Path, preset: str | None, overrides: dict, resume: bool):
    """(arch, model config, TrainConfig, data dir, preset): from preset + overrides, or from the run on resume."""
    overrides = dict(overrides)
    saved = read_config(out) if resume else {}
    arch = check_arch(str(overrides.pop("arch", saved.get("arch", "gpt"))))
    if resume and arch != saved.get("arch", "gpt"):
        raise ConfigError(f"{out} holds a {saved.get('arch', 'gpt')!r} model; resume it without --set arch={arch}")
    model_over, train_over = split_overrides(overrides, config_class(arch))
    if resume:
        if preset is not None and preset != saved.get("preset"):
            raise ConfigError(f"{out} was trained with preset {saved.get('preset')!r}; resume it without --preset {preset}")
        changed = {k: v for k, v in model_over.items() if saved["model"].get(k) != v}
        if changed:
            raise ConfigError(f"the model's shape is fixed once trained; cannot change {sorted(changed)} on resume")
        train_cfg = TrainConfig.from_dict({**saved["train"], **train_over})
        return arch, make_config(arch, saved["model"]), train_cfg, data_dir or saved["data"]["dir"], saved.get("preset")
    if data_dir is None:
        raise ConfigError("pretraining needs --data DIR (made by `groklm data prepare`)")
    if (out / CONFIG_FILE).exists() or (out / CHECKPOINT_DIR).exists():
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
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
    from groklm.model.moe import moe_loss
    from groklm.train.loop import next_token_loss

    return moe_loss if getattr(model_cfg, "moe_experts", 0) else next_token_loss


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


def write_run_dir(out: Path, arch: str, model_cfg, train_cfg: TrainConfig, shards: TokenShards, preset, fresh: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "model": model_cfg.to_dict(),
        "train": train_cfg.to_dict(),
        "data": {"dir": str(shards.dir.resolve()), "meta": shards.meta},
        "stage": "pretrain",
        "arch": arch,
        "preset": preset,
    }
    write_json(out / CONFIG_FILE, config)
    tokenizer = shards.dir / TOKENIZER_DIR
    if fresh and tokenizer.is_dir():
        shutil.copytree(tokenizer, out / TOKENIZER_DIR, dirs_exist_ok=True)


def seed_everything(seed: int) -> None:
    import torch

    torch.manual_seed(seed)  # also seeds every CUDA device
    np.random.seed(seed)
    random.seed(seed)


def make_batches(tokens: np.ndarray, cfg: TrainConfig, block_size: int):
    """Step `step`'s global batch is batch_size * grad_accum windows drawn from (seed, step);
    micro-batch m is its m-th slice of batch_size windows. Each process asks for its own m's."""

    def batches(step: int, micros: range):
        offsets = batch_offsets(cfg.seed, step, cfg.grad_accum * cfg.batch_size, len(tokens), block_size)
        for m in micros:
            yield get_batch(tokens, offsets[m * cfg.batch_size : (m + 1) * cfg.batch_size], block_size)

    return batches


def make_val_batch(tokens: np.ndarray, cfg: TrainConfig, block_size: int):
    def val_batch(i: int):
        return get_batch(tokens, batch_offsets(cfg.seed, i, cfg.batch_size, len(tokens), block_size, stream=1), block_size)

    return val_batch
