"""`groklm compare`: models sized to the parameter budget, end to end at a tiny time budget
(report.md, report.json, PNGs, run directories), and its bad input."""

from __future__ import annotations

import json
import random

import pytest

from groklm.cli.main import main
from groklm.errors import ConfigError
from groklm.experiments.compare import WIDTH_STEP, count_params, loss_at, loss_by_position, size_model, split_settings


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from groklm.data.shards import prepare

    root = tmp_path_factory.mktemp("compare")
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran"]
    (root / "text.txt").write_text("\n".join(" ".join(rng.choice(words) for _ in range(6)) + "." for _ in range(800)))
    prepare([str(root / "text.txt")], "char", root / "data", progress=False)
    return root / "data"


@pytest.mark.parametrize("name", ["gpt", "rnn", "lstm", "gru"])
def test_each_model_is_the_width_closest_to_the_budget(name):
    for budget in (5_000, 60_000):
        arch, values = size_model(name, budget, 64, {"block_size": 32}, 4, 2)
        params = count_params(arch, values)
        narrower = count_params(arch, {**values, "n_embd": values["n_embd"] - WIDTH_STEP}) if values["n_embd"] > WIDTH_STEP else 0
        wider = count_params(arch, {**values, "n_embd": values["n_embd"] + WIDTH_STEP})
        assert abs(params - budget) <= abs(narrower - budget) and abs(params - budget) <= abs(wider - budget)


def test_moe_matches_the_dense_gpt_in_active_parameters():
    from groklm.model.arch import build_model, make_config
    from groklm.model.moe import active_params

    _, dense = size_model("gpt", 50_000, 64, {"block_size": 32}, 4, 2)
    arch, moe = size_model("moe", 50_000, 64, {"block_size": 32}, 4, 2)
    assert arch == "gpt" and moe["n_embd"] == dense["n_embd"] and moe["mlp_hidden"] == 2 * dense["n_embd"]
    model = build_model("gpt", make_config("gpt", moe))
    active = active_params(model)
    dense_params = count_params("gpt", dense)
    assert dense_params < active < dense_params * 1.1 and model.num_params() > 1.5 * active


def test_compare_runs_end_to_end_and_writes_the_report(data, tmp_path, capsys):
    out = tmp_path / "cmp"
    main(["compare", "--data", str(data), "--budget-params", "20000", "--budget-seconds", "0.5", "--out", str(out),
          "--models", "gpt,rnn,moe", "--moe-experts", "4", "--moe-top-k", "1", "--sample-tokens", "20", "--no-progress",
          "--set", "block_size=16", "eval_iters=2", "batch_size=8"])
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert list(report["models"]) == ["gpt", "rnn", "moe"]
    for name, r in report["models"].items():
        assert r["steps"] >= 10 and r["tokens_per_sec"] > 0 and r["val_loss"] > 0 and r["sample"]["continuation"]
        assert abs(r["active_params"] - 20_000) < 0.5 * 20_000, (name, r["active_params"])
        assert (out / "runs" / name / "config.json").is_file() and r["curve"][-1]["step"] == r["steps"]
    assert report["models"]["moe"]["params"] > report["models"]["moe"]["active_params"]
    assert len(report["models"]["moe"]["expert_load"][0]["load"]) == 4
    assert set(report["gaps"]) == {"rnn", "moe"} and set(report["best"].values()) <= set(report["models"])
    assert report["equal_time_s"] == min(r["wall_s"] for r in report["models"].values())
    for png in ("val_loss_vs_time.png", "val_loss_vs_tokens.png", "val_loss_by_position.png", "tokens_per_sec.png",
                "expert_load.png"):
        assert (out / png).stat().st_size > 1000
    markdown = (out / "report.md").read_text()
    assert "| rnn |" in markdown and "Context use" in markdown and "## Samples" in markdown
    assert "![val_loss_vs_time](val_loss_vs_time.png)" in markdown
    assert report["verdict"] in printed
    with pytest.raises(SystemExit):  # an earlier comparison is kept unless --force
        main(["compare", "--data", str(data), "--budget-params", "20000", "--budget-seconds", "0.5", "--out", str(out)])
    assert "already holds a comparison" in capsys.readouterr().err


def test_loss_at_reads_the_curve_by_tokens_or_time():
    curve = [{"tokens": 100, "elapsed": 1.0, "val_loss": 3.0}, {"tokens": 200, "elapsed": 2.0, "val_loss": 2.0},
             {"tokens": 400, "elapsed": 4.0, "val_loss": 1.0}]
    assert loss_at(curve, "tokens", 150) == pytest.approx(2.5)
    assert loss_at(curve, "tokens", 300) == pytest.approx(1.5)
    assert loss_at(curve, "elapsed", 3.0) == pytest.approx(1.5)
    assert loss_at(curve, "tokens", 50) == 3.0 and loss_at(curve, "tokens", 900) == 1.0


def test_loss_by_position_averages_to_the_models_own_loss():
    import numpy as np
    import torch

    from groklm.data.shards import get_batch
    from groklm.experiments.compare import HELD_OUT_WINDOWS
    from groklm.model import RecurrentLM, RNNConfig

    torch.manual_seed(0)
    model = RecurrentLM(RNNConfig(vocab_size=20, n_layer=1, n_embd=8, cell="gru")).eval()
    tokens = np.random.default_rng(0).integers(0, 20, 5000).astype(np.uint16)
    by_position = loss_by_position(model, tokens, 12)
    starts = np.unique(np.linspace(0, len(tokens) - 13, HELD_OUT_WINDOWS).astype(np.int64))
    with torch.no_grad():
        expected = model(*get_batch(tokens, starts, 12))[1].item()
    assert len(by_position) == 12 and sum(by_position) / 12 == pytest.approx(expected, rel=1e-5)


def test_bad_compare_settings_are_clear_errors(data, tmp_path):
    from groklm.experiments.compare import compare

    with pytest.raises(ConfigError, match="--models takes names"):
        compare(data, 1000, 1, tmp_path / "a", ["gpt", "transformer"])
    with pytest.raises(ConfigError, match="max_iters"):
        split_settings({"max_iters": "100"}, ["gpt"])
    with pytest.raises(ConfigError, match="n_embd"):
        split_settings({"n_embd": "64"}, ["gpt"])
    with pytest.raises(ConfigError, match="MODEL.KEY"):
        split_settings({"lstm.lr": "1e-3"}, ["gpt", "gru"])
    with pytest.raises(ConfigError, match="positive"):
        compare(data, 1000, 0, tmp_path / "b", ["gpt"])


def test_each_model_gets_its_learning_rate_unless_set():
    shared, trains = split_settings({"batch_size": "8", "gru.lr": "3e-3", "block_size": "32"}, ["gpt", "gru"])
    assert shared == {"block_size": 32}
    assert trains["gpt"]["lr"] == 5e-3 and trains["gpt"]["min_lr"] == pytest.approx(5e-4)
    assert trains["gru"]["lr"] == 3e-3 and trains["gru"]["min_lr"] == pytest.approx(3e-4)
    assert trains["gpt"]["batch_size"] == trains["gru"]["batch_size"] == 8
