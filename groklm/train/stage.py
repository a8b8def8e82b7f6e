"""The stage contract: what every training stage (pretrain, sft, reward, dpo, kto, ppo, seq2seq,
distill) does around its own model, data and loss.

    open_run        fresh: refuse a directory that already holds a run
                    resume: read its config.json (of this stage), check it has a checkpoint
    (the stage)     read the config, load and check its data: every check that can fail
    stage_process   join the other processes (torchrun), then rank 0 writes config.json (and the
                    tokenizer of a fresh run), every process seeds its generators
    run_stage       ... then builds the stage's Setup, trains with the shared loop, and saves
                    the weights and the loss plot; the processes leave the group at the end

All checks happen before stage_process, on every process, so a bad argument stops every
process alike and never leaves a half-written run directory behind. RL, whose step is not the
shared loop's, uses stage_process directly and runs its own loop inside it.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from groklm.errors import CheckpointError, ConfigError
from groklm.model.config import GPTConfig
from groklm.model.gpt import GPT
from groklm.model.lora import apply_lora_section, check_lora_base, lora_section
from groklm.rundir import WEIGHTS_FILE, RunDir, read_config
from groklm.train.checkpoint import find_checkpoint
from groklm.train.config import TrainConfig
from groklm.train.distributed import Distributed
from groklm.train.loop import Batches, LossFn, Setup, ValBatch, language_model_loss, resolve_device, train_and_save

# config.json "arch" values whose model is (or wraps) a GPT, which gradient checkpointing needs.
CHECKPOINTED_ARCHS = ("gpt", "reward")


def open_run(out: str | os.PathLike, stages: str | tuple[str, ...], resume: bool) -> tuple[RunDir, dict | None]:
    """(the run directory, its saved config when resuming, else None).

    A fresh run refuses a directory that already holds one; a resumed run must be one of
    `stages` and have a checkpoint, checked before anything is rewritten."""
    run = RunDir(out)
    if not resume:
        run.check_fresh()
        return run, None
    saved = run.read_config()
    stages = (stages,) if isinstance(stages, str) else stages
    if saved.get("stage") not in stages:
        wanted = " or ".join(map(repr, stages))
        raise ConfigError(f"{run.path} is a {saved.get('stage')!r} run, not one of stage {wanted}; "
                          "resume it with its own command")
    find_checkpoint(run.path)
    return run, saved


def check_start_run(base: Path, out: Path, continues: str) -> None:
    """The run a stage starts from must be a plain GPT run with weights, other than the new run.
    `continues` says what the stage does with it, for the messages ("fine-tune", "continue")."""
    config = read_config(base)  # a clear error if it is missing or not a run
    if "lora" in config:
        raise CheckpointError(f"{base} is a LoRA run (adapters only): merge it first "
                              f"(groklm merge {base} --out MERGED) and {continues} the merged run")
    if config["arch"] != "gpt":
        raise CheckpointError(f"{base} holds a {config['arch']!r} model; only GPT runs can be {continues}d here")
    if not (base / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{base} has no {WEIGHTS_FILE}; train or import a model there first")
    if base.resolve() == out.resolve():
        raise ConfigError(f"--out must be a new directory, not the run {base} being {continues}d")


def resolve_lora(train_cfg: TrainConfig, base: Path, saved: dict | None, run_path: Path, model_config: GPTConfig) -> dict | None:
    """The "lora" section of a stage's config.json, or None for full fine-tuning.

    Fresh: from the lora_* training keys, with the base run's reference and weights hash.
    Resumed: the saved one (its checkpoint holds only adapters, so the base must still be there,
    unchanged), and the lora_* keys cannot change. Either way the targets and rank are checked
    against a weightless copy of the model here, before anything is written."""
    if saved is not None:
        lora = saved.get("lora")
        if lora is not None:
            check_lora_base(lora, run_path)
        if (lora is None) != (train_cfg.lora is None) or (
                lora and any(lora[key] != value for key, value in train_cfg.lora.items())):
            raise ConfigError(f"{run_path} was trained with LoRA settings {lora or 'none'}; "
                              "a resumed run keeps them: leave the lora_* keys out of --set")
    else:
        lora = lora_section(base, **train_cfg.lora) if train_cfg.lora else None
    if lora is not None:
        with torch.device("meta"):  # no memory, no weights: only the layer shapes matter
            apply_lora_section(GPT(model_config), lora)
    return lora


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # also seeds every CUDA device
    np.random.seed(seed)
    random.seed(seed)


@dataclass
class Place:
    """Where this process trains: its run directory, its place among the processes, its device."""

    run: RunDir
    dist: Distributed
    device: torch.device

    def setup(self, model, batches: Batches, val_batch: ValBatch, tokens_per_micro: int,
              loss_fn: LossFn = language_model_loss) -> Setup:
        """The shared loop's Setup for the stage's model, batches and loss, on this process."""
        return Setup(model=model, batches=batches, val_batch=val_batch, tokens_per_micro=tokens_per_micro,
                     run_dir=self.run.path, dist=self.dist, device=self.device, loss_fn=loss_fn)


@contextmanager
def stage_process(run: RunDir, config: dict, train_cfg: TrainConfig, resume: bool, tokenizer: Path | None = None,
                  distributed: bool = True, shared_loop: bool = False) -> Iterator[Place]:
    """Join the process group, let rank 0 write config.json (`config`: the keys of
    RunDir.write_config) and, on a fresh run, copy `tokenizer` in; seed; yield this process's
    Place; leave the group however the stage ends.

    distributed=False: one process whatever the environment says (a stage with nothing to share out).
    shared_loop: the stage trains with loop.train (run_stage), which applies grad_checkpoint; a
    stage with its own loop (RL) does not, so it refuses the key."""
    if train_cfg.lora_rank and "lora" not in config:
        # A stage that does not wrap its model would silently train every weight instead.
        raise ConfigError(f"the {config['stage']} stage does not train LoRA adapters yet (pretrain --init-from, "
                          "sft, reward, dpo, kto, ppo and grpo do): leave out lora_rank")
    if train_cfg.grad_checkpoint and not (shared_loop and config["arch"] in CHECKPOINTED_ARCHS):
        # Refused here, before anything is written, rather than silently training without it.
        raise ConfigError(f"grad_checkpoint works on the transformer stages trained by the shared loop "
                          f"(pretrain with arch=gpt, sft, reward, dpo, kto), not on this {config['stage']} "
                          f"{config['arch']} run: leave grad_checkpoint out")
    if train_cfg.sequence_parallel and config["stage"] != "pretrain":
        # Every other stage would fail only after config.json is written (the shared loop) or
        # ignore it (RL's own loop): refused here, like the keys above.
        raise ConfigError(f"sequence_parallel works in GPT pretraining only, not in the {config['stage']} stage: leave it out")
    dist = Distributed.from_env() if distributed else Distributed()
    device = resolve_device(train_cfg, dist.local_rank)
    dist.start(device)  # every check has passed on every process before rank 0 writes
    try:
        if dist.is_main:
            run.write_config(**config)
            if tokenizer is not None and not resume:
                run.copy_tokenizer(tokenizer)
        seed_everything(train_cfg.seed)
        yield Place(run, dist, device)
    finally:
        dist.stop()


def run_stage(run: RunDir, config: dict, train_cfg: TrainConfig, build: Callable[[Place], Setup], *, resume: bool,
              progress: bool, tokenizer: Path | None = None, distributed: bool = True) -> Path:
    """The whole contract for a stage trained by the shared loop; returns the run's path.

    build(place) -> Setup: the stage's model on place.device, its batches and its loss (called
    after seeding, so a model built there starts from the same weights on every process)."""
    with stage_process(run, config, train_cfg, resume, tokenizer, distributed, shared_loop=True) as place:
        train_and_save(train_cfg, build(place), f"{config['stage']} {run.path.name}", resume=resume, progress=progress)
    return run.path
