"""Exact resume: a run killed with SIGKILL after a checkpoint, then resumed, reproduces an
uninterrupted run step for step (the same losses to 1e-6)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from groklm.train.pretrain import pretrain

from helpers.runs import read_metrics
from helpers.training import REPO, TINY, cli_env, make_data

# Dropout on, so that the restored RNG state matters as much as the weights and optimizer.
RUN = {**TINY, "max_iters": 400, "eval_interval": 20, "log_interval": 1, "dropout": 0.1}


def start_and_kill(data, run) -> tuple[int, str]:
    """Run `groklm pretrain` in a subprocess and SIGKILL it as soon as a checkpoint exists."""
    sets = [f"{k}={v}" for k, v in RUN.items()]
    command = [sys.executable, "-m", "groklm", "pretrain", "--data", str(data), "--out", str(run), "--no-progress", "--set", *sets]
    process = subprocess.Popen(command, cwd=REPO, env=cli_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "checkpoint").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    process.kill()  # SIGKILL: no handler, no cleanup, whatever was mid-write stays half-written
    _, stderr = process.communicate()
    return process.returncode, stderr


def test_killed_and_resumed_run_matches_an_uninterrupted_one(tmp_path):
    data = make_data(tmp_path / "data")
    reference = read_metrics(pretrain(data, tmp_path / "reference", overrides=RUN, progress=False))

    run = tmp_path / "run"
    returncode, stderr = start_and_kill(data, run)
    assert returncode == -9, f"the run was not killed mid-way (exit {returncode}): {stderr}"
    checkpoint_step = json.loads((run / "checkpoint" / "state.json").read_text())["step"]
    assert 0 < checkpoint_step <= max(r["step"] for r in read_metrics(run)) < RUN["max_iters"]

    pretrain(None, run, resume=True, progress=False)
    resumed = read_metrics(run)
    assert [r["step"] for r in resumed] == [r["step"] for r in reference] == list(range(1, 401))
    for ours, theirs in zip(resumed, reference):
        assert abs(ours["loss"] - theirs["loss"]) <= 1e-6, ours["step"]
        assert abs(ours.get("val_loss", 0) - theirs.get("val_loss", 0)) <= 1e-6, ours["step"]
