"""Data parallelism: 2 processes (gloo, CPU) trace the same loss curve as 1 process with the
same global batch; RL runs on 2 processes too."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from groklm.model import GPT
from groklm.model.weights import save_weights
from groklm.rundir import RunDir
from groklm.train.pretrain import pretrain
from groklm.train.reward import RewardModel

from helpers.runs import read_metrics, tiny_run
from helpers.training import REPO, TINY, cli_env, ddp_pretrain, make_data

RUN = {**TINY, "max_iters": 20, "log_interval": 1, "grad_accum": 2}


def test_two_processes_match_one(tmp_path):
    data = make_data(tmp_path / "data")
    single = read_metrics(pretrain(data, tmp_path / "single", overrides=RUN, progress=False))

    ddp = read_metrics(ddp_pretrain(data, tmp_path / "ddp", RUN))

    assert [r["step"] for r in ddp] == [r["step"] for r in single] == list(range(1, 21))
    for a, b in zip(ddp, single):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5), a["step"]
        assert a.get("val_loss", 0) == pytest.approx(b.get("val_loss", 0), abs=1e-5), a["step"]


def test_grad_accum_must_divide_among_processes(tmp_path):
    from groklm.errors import ConfigError
    from groklm.train.config import TrainConfig
    from groklm.train.distributed import Distributed
    from groklm.train.loop import micro_range

    cfg = TrainConfig(grad_accum=4)
    assert micro_range(cfg, Distributed(rank=1, world_size=2)) == range(2, 4)
    with pytest.raises(ConfigError, match="multiple of the number of processes"):
        micro_range(TrainConfig(grad_accum=3), Distributed(rank=0, world_size=2))


def random_reward_run(directory, like):
    """A reward model run on the backbone of run `like`, its head random (a trained head's job:
    answers must score differently for RL to have anything to learn from)."""
    rm = RewardModel(GPT.from_run(like))
    torch.nn.init.normal_(rm.head.weight)
    run = RunDir(directory)
    run.write_config("reward", parent=like, arch="reward", model=rm.backbone.config.to_dict(), train=None, data=None)
    save_weights(rm, run.weights_path)
    run.copy_tokenizer(like / "tokenizer")
    return directory


def test_ppo_under_torchrun_writes_a_loadable_run(tmp_path):
    """RL on two processes: each answers its share of the prompts, DDP averages the gradients,
    rank 0 writes a plain GPT run."""
    source = tiny_run(tmp_path / "sft", block_size=256, stage="sft")
    reward = random_reward_run(tmp_path / "rm", source)
    out = tmp_path / "ppo"
    sets = ["max_iters=2", "prompts_per_step=4", "batch_size=2", "max_new_tokens=2", "eval_interval=1", "lr=1e-3",
            "min_lr=1e-3", "device=cpu"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "groklm", "ppo", str(source), "--prompts", "synthetic:arithmetic", "--reward", str(reward),
               "--out", str(out), "--no-progress", "--set", *sets]
    done = subprocess.run(command, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es)" in done.stderr
    assert [r["step"] for r in read_metrics(out)] == [1, 2]
    config = json.loads((out / "config.json").read_text())
    assert (config["stage"], config["parent"], config["rl"]["prompts_per_step"]) == ("ppo", str(source.resolve()), 4)
    moved, start = GPT.from_run(out).state_dict(), GPT.from_run(source).state_dict()
    assert any(not torch.equal(moved[k], start[k]) for k in start)
