"""The main job end to end, in miniature: every stage runs, the report holds real figures."""

from __future__ import annotations

import json
import math

import pytest

from groklm.errors import ConfigError
from groklm.speedrun import speedrun

SMALL = {"max_iters": 6, "eval_interval": 3, "eval_iters": 2, "n_layer": 1, "n_head": 2, "n_embd": 32,
         "block_size": 32, "batch_size": 4, "warmup_iters": 2}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("speedrun")
    return out, speedrun(out, vocab_size=512, overrides=SMALL, progress=False)


def test_every_stage_writes_its_directory_and_the_report(finished):
    out, report = finished
    for stage in ("tokenizer", "data", "base"):
        assert (out / stage).is_dir()
    assert (out / "base" / "model.safetensors").is_file() and (out / "base" / "loss.png").is_file()
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    markdown = (out / "report.md").read_text()
    assert "| pretrain |" in markdown and "## Samples" in markdown


def test_report_figures_are_measured(finished):
    _, report = finished
    base = report["stages"]["pretrain"]
    assert base["steps"] == SMALL["max_iters"]
    assert base["val_loss"] < base["uniform_loss"] == pytest.approx(math.log(512))
    assert report["stages"]["data"]["bytes_per_token"] > 1.5  # BPE compresses real text
    assert len(report["samples"]) == 3 and all(s["completion"] for s in report["samples"])


def test_a_second_speedrun_into_the_same_directory_needs_force(finished):
    out, _ = finished
    with pytest.raises(ConfigError, match="--force"):
        speedrun(out, vocab_size=512, overrides=SMALL, progress=False)


@pytest.mark.slow
def test_full_speedrun_learns(tmp_path):
    report = speedrun(tmp_path, progress=False)
    base = report["stages"]["pretrain"]
    assert base["val_loss"] < base["uniform_loss"] - 2.0
