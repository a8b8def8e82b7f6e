"""Pretraining: next-token prediction on token shards, from random weights to a base model.

    data dir (train.bin, val.bin, tokenizer/) ──► GPT ──► run dir (config.json, model.safetensors,
                                                           tokenizer/, metrics.jsonl, checkpoint/, loss.png)

Every step trains on batch_size * grad_accum random windows of block_size tokens; the loss is
the cross-entropy of each next token. See loop.py for the step itself. `--set arch=rnn|lstm|gru`
trains a recurrent model (groklm/model/rnn.py) the same way instead; config.json's "arch" says which.
"""

from __future__ import annotations

import os
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np

from groklm.data.shards import TokenShards, batch_offsets, get_batch
from groklm.errors import ConfigError, DataError
from groklm.model.arch import build_model, check_arch, config_class, make_config
from groklm.model.moe import moe_loss
from groklm.rundir import TOKENIZER_DIR
from groklm.train.config import TrainConfig, split_overrides
from groklm.train.config import preset as preset_values
from groklm.train.loop import language_model_loss
from groklm.train.stage import Place, open_run, run_stage

STAGE = "pretrain"
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
    run, saved = open_run(out_dir, STAGE, resume)
    arch, model_cfg, train_cfg, data_dir, preset = resolve_config(data_dir, run.path, saved, preset, overrides or {})
    shards = TokenShards(data_dir)
    check_data(shards, model_cfg, data_dir)
    config = {"stage": STAGE, "parent": None, "arch": arch, "model": model_cfg.to_dict(), "train": train_cfg.to_dict(),
              "data": {"dir": str(shards.dir.resolve()), "meta": shards.meta}, STAGE: {"preset": preset}}
    tokenizer = shards.dir / TOKENIZER_DIR

    def build(place: Place):
        model = build_model(arch, model_cfg).to(place.device)
        if place.dist.is_main:
            print(f"{arch.upper()}: {model.num_params():,} parameters ({model.num_params(non_embedding=True):,} without "
                  f"embeddings), {place.dist.world_size} process(es) on {place.device}", file=sys.stderr, flush=True)
        return place.setup(model, make_batches(shards.train, train_cfg, model_cfg.block_size),
                           make_val_batch(shards.val, train_cfg, model_cfg.block_size),
                           tokens_per_micro=train_cfg.batch_size * model_cfg.block_size, loss_fn=loss_function(model_cfg))

    return run_stage(run, config, train_cfg, build, resume=resume, progress=progress,
                     tokenizer=tokenizer if tokenizer.is_dir() else None)


def resolve_config(data_dir, out: Path, saved: dict | None, preset: str | None, overrides: dict):
    """(arch, model config, TrainConfig, data dir, preset): from preset + overrides, or from
    the saved config of the run being resumed."""
    overrides = dict(overrides)
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
