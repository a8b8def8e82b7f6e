"""Checkpoints: everything needed to continue a run exactly where it stopped.

    RUN/checkpoint/
      model.safetensors   the weights (adapters.safetensors instead for a LoRA run: only the adapters)
      trainer.pt          optimizer (AdamW moments, and Muon momenta with optimizer=muon), grad scaler,
                          RNG states (torch, cuda, numpy, python)
      state.json          step, elapsed time, data position

A checkpoint is written whole into a fresh folder, which then replaces the old one by rename:
at every instant the run holds either the old checkpoint or the new one, never a mix and
never half a file. (Between the two renames the old one sits at `.checkpoint.old`, which
`find_checkpoint` falls back to.) trainer.pt holds only tensors, numbers, strings and lists,
so it loads with `torch.load(weights_only=True)`, which cannot execute code.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from groklm.errors import CheckpointError
from groklm.model.lora import load_trained_weights, save_trained_weights
from groklm.rundir import CHECKPOINT_DIR, atomic_path, read_json, write_json

TRAINER_FILE = "trainer.pt"
STATE_FILE = "state.json"


def save_checkpoint(run_dir: Path, model, optimizer, scaler, state: dict) -> Path:
    """Write model + optimizer + RNG + `state` (step, data position, ...) as RUN/checkpoint."""
    final = Path(run_dir) / CHECKPOINT_DIR
    new, old = final.with_name(f".{CHECKPOINT_DIR}.new"), final.with_name(f".{CHECKPOINT_DIR}.old")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    save_trained_weights(model, new)
    with atomic_path(new / TRAINER_FILE) as tmp:
        torch.save({"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "rng": rng_state()}, tmp)
    write_json(new / STATE_FILE, state)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(run_dir: Path) -> Path:
    """The run's checkpoint folder (or the previous one, if a save died between its renames)."""
    for folder in (Path(run_dir) / CHECKPOINT_DIR, Path(run_dir) / f".{CHECKPOINT_DIR}.old"):
        if (folder / STATE_FILE).is_file():
            return folder
    raise CheckpointError(f"{run_dir} has no checkpoint to resume from; run again without --resume")


def load_checkpoint(folder: Path, model, optimizer, scaler) -> dict:
    """Restore model, optimizer, scaler and RNG from `folder`; returns the saved state dict."""
    state = read_json(folder / STATE_FILE)
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{folder / STATE_FILE} is corrupt: no step")
    load_trained_weights(model, folder)
    path = folder / TRAINER_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; the checkpoint is incomplete")
    try:
        trainer = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(trainer.get("optimizer"), dict) and trainer["optimizer"].keys() != optimizer.state_dict().keys():
            # AdamW's state is {state, param_groups}, Muon with AdamW's {adamw, muon}.
            raise CheckpointError(f"{path} holds another optimizer's state than this run's; resume with the "
                                  "optimizer the run was trained with (--set optimizer=...)")
        optimizer.load_state_dict(trainer["optimizer"])
        scaler.load_state_dict(trainer["scaler"])
        set_rng_state(trainer["rng"])
    except CheckpointError:
        raise
    except Exception as error:  # truncated zip, foreign pickle, wrong shapes: all the same to a user
        raise CheckpointError(f"{path} is corrupt or does not fit this model ({type(error).__name__}: {error})") from error
    return state


def rng_state() -> dict:
    """Every random generator's state as tensors and plain lists (weights_only-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, mt_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "cached": cached},
        "python": {"version": version, "state": list(mt_state), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
