"""Pretraining without a tokenizer: synthetic token shards, a model small enough for milliseconds
per step, and the environment for `python -m groklm` subprocesses run from this checkout."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np

from groklm.data.shards import META_FILE, ShardWriter
from groklm.rundir import write_json
from groklm.train.pretrain import pretrain

from helpers.runs import read_metrics

REPO = Path(__file__).resolve().parents[2]
# A model small enough that a step takes a few milliseconds.
TINY = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 4, "max_iters": 30,
        "eval_interval": 10, "eval_iters": 2, "log_interval": 5, "warmup_iters": 5, "device": "cpu"}


def make_data(directory: Path, n_tokens: int = 5000, vocab: int = 50, val_fraction: float = 0.1, seed: int = 0) -> Path:
    """Shards of a learnable sequence (a noisy counter mod vocab) plus meta.json."""
    rng = np.random.default_rng(seed)
    tokens = (np.arange(n_tokens) + (rng.random(n_tokens) < 0.1)) % vocab
    writer = ShardWriter(directory, np.uint16)
    writer.write(tokens)
    n_train, n_val = writer.finish(val_fraction)
    write_json(directory / META_FILE, {"vocab_size": vocab, "dtype": "uint16", "train_tokens": n_train, "val_tokens": n_val})
    return directory


def cli_env() -> dict:
    """The environment for `python -m groklm` subprocesses: this checkout, one thread."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def ddp_pretrain(data: Path, out: Path, settings: dict, *flags: str) -> Path:
    """`groklm pretrain` on 2 processes (torchrun, gloo on the CPU) with `--set` settings and
    extra flags; returns the run directory, failing the test with the stderr of a failed run."""
    sets = [f"{key}={value}" for key, value in settings.items()]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "groklm",
               "pretrain", "--data", str(data), "--out", str(out), "--no-progress", *flags, "--set", *sets]
    done = subprocess.run(command, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def sum_chats(n: int, seed: int = 0) -> list[dict]:
    """Chat records asking for the sum of two digits: an SFT task a tiny model learns in a few steps."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        records.append({"messages": [{"role": "user", "content": f"{a}+{b}=?"},
                                     {"role": "assistant", "content": str(a + b)}]})
    return records


def quick_pretrain(tmp_path: Path, name: str, **settings) -> tuple[Path, list[dict]]:
    """A small GPT pretrained for 40 steps on make_data's tokens (settings override the shape and
    the training keys) -> (its run directory, its metrics)."""
    base = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16, "batch_size": 4, "max_iters": 40,
            "eval_interval": 15, "eval_iters": 2, "log_interval": 5, "warmup_iters": 5, "device": "cpu", "lr": 1e-2}
    run = pretrain(make_data(tmp_path / "data"), tmp_path / name, overrides={**base, **settings}, progress=False)
    return run, read_metrics(run)
