"""Data parallelism: 2 processes (gloo, CPU) trace the same loss curve as 1 process with the
same global batch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from groklm.train.pretrain import pretrain
from test_train import REPO, TINY, cli_env, make_data, read_metrics  # noqa: F401

RUN = {**TINY, "max_iters": 20, "log_interval": 1, "grad_accum": 2}


def test_two_processes_match_one(tmp_path):
    data = make_data(tmp_path / "data")
    single = read_metrics(pretrain(data, tmp_path / "single", overrides=RUN, progress=False))

    sets = [f"{k}={v}" for k, v in RUN.items()]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "groklm", "pretrain", "--data", str(data), "--out", str(tmp_path / "ddp"), "--no-progress", "--set", *sets]
    done = subprocess.run(command, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = read_metrics(tmp_path / "ddp")

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
