"""`groklm compare`: models sized to the parameter budget, the learning-rate search, the crossover
sentence, end to end at tiny time budgets (report.md, report.json, PNGs, run directories), and
its bad input."""

from __future__ import annotations

import json
import random

import pytest

from groklm.cli.main import main
from groklm.errors import ConfigError
from groklm.experiments.compare import (
    MOD_CAPACITY,
    WIDTH_STEP,
    at_rate,
    best_learning_rate,
    count_params,
    crossover_sentence,
    crossovers,
    loss_at,
    loss_by_position,
    size_model,
    split_settings,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from groklm.data.prepare import prepare

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


def test_mod_is_the_dense_gpt_with_every_other_block_routed():
    from groklm.model.arch import build_model, make_config
    from groklm.model.depth_router import DepthRouter

    _, dense = size_model("gpt", 50_000, 64, {"block_size": 32}, 4, 2)
    arch, mod = size_model("mod", 50_000, 64, {"block_size": 32}, 4, 2)
    assert arch == "gpt" and mod == {**dense, "mod_capacity": MOD_CAPACITY}
    model = build_model("gpt", make_config("gpt", mod))
    assert [isinstance(block, DepthRouter) for block in model.blocks] == [False, True, False, True]
    # The same weights plus, per routed block, a router (n_embd) and a predictor (n_embd + bias).
    assert model.num_params() == count_params("gpt", dense) + 2 * (2 * mod["n_embd"] + 1)
    dense_model = build_model("gpt", make_config("gpt", dense))
    assert model.flops_per_token(32) < 0.7 * dense_model.flops_per_token(32)


def test_compare_runs_end_to_end_and_writes_the_report(data, tmp_path, capsys):
    out = tmp_path / "cmp"
    main(["compare", "--data", str(data), "--budget-params", "20000", "--budget-seconds", "0.5", "--out", str(out),
          "--models", "gpt,rnn,moe,mod", "--moe-experts", "4", "--moe-top-k", "1", "--sample-tokens", "20", "--no-progress",
          "--lr-search", "off", "--set", "block_size=16", "eval_iters=2", "batch_size=8"])
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert list(report["models"]) == ["gpt", "rnn", "moe", "mod"] and report["budgets"] == [0.5]
    for name, r in report["models"].items():
        assert r["steps"] >= 10 and r["tokens_per_sec"] > 0 and r["val_loss"] > 0 and r["sample"]["continuation"]
        assert abs(r["active_params"] - 20_000) < 0.5 * 20_000, (name, r["active_params"])
        assert (out / "runs" / f"{name}-0.5s" / "config.json").is_file() and r["curve"][-1]["step"] == r["steps"]
        assert report["lr_search"][name] == {"budget_s": 0.5, "tried": [], "chosen": 5e-3}
    assert report["models"]["moe"]["params"] > report["models"]["moe"]["active_params"]
    assert len(report["models"]["moe"]["expert_load"][0]["load"]) == 4
    assert report["models"]["mod"]["model"]["mod_capacity"] == MOD_CAPACITY
    assert set(report["gaps"]) == {"rnn", "moe", "mod"} and set(report["best"].values()) <= set(report["models"])
    assert report["equal_time_s"] == min(r["wall_s"] for r in report["models"].values())
    assert set(report["crossover"]) == {"rnn"} and report["crossover_sentence"].startswith("The GPT's val loss")
    for png in ("val_loss_vs_time.png", "val_loss_vs_tokens.png", "val_loss_by_position.png", "tokens_per_sec.png",
                "expert_load.png"):
        assert (out / png).stat().st_size > 1000
    assert not (out / "val_loss_vs_budget.png").exists()  # one budget: no curve across budgets
    markdown = (out / "report.md").read_text()
    assert "| rnn |" in markdown and "Context use" in markdown and "## Samples" in markdown
    assert "![val_loss_vs_time](val_loss_vs_time.png)" in markdown
    assert report["verdict"] in printed and report["crossover_sentence"] in printed
    with pytest.raises(SystemExit):  # an earlier comparison is kept unless --force
        main(["compare", "--data", str(data), "--budget-params", "20000", "--budget-seconds", "0.5", "--out", str(out)])
    assert "already holds a comparison" in capsys.readouterr().err


def test_compare_at_two_budgets_searches_the_rate_and_plots_across_budgets(data, tmp_path):
    out = tmp_path / "cmp"
    main(["compare", "--data", str(data), "--budget-params", "8000", "--budgets", "1,0.5", "--out", str(out),
          "--models", "gpt,gru", "--lr-search", "1e-3,1e-2", "--sample-tokens", "5", "--no-progress",
          "--set", "block_size=16", "eval_iters=2", "batch_size=8", "gru.lr=3e-3"])
    report = json.loads((out / "report.json").read_text())
    assert report["budgets"] == [0.5, 1.0] and report["budget_seconds"] == 1.0
    gpt_search = report["lr_search"]["gpt"]
    assert [t["lr"] for t in gpt_search["tried"]] == [1e-3, 1e-2] and gpt_search["chosen"] == best_learning_rate(gpt_search["tried"])
    assert report["lr_search"]["gru"] == {"budget_s": 0.5, "tried": [], "chosen": 3e-3}  # its rate was --set: no search
    for name in ("gpt", "gru"):
        points = report["by_budget"][name]
        assert [p["budget_s"] for p in points] == [0.5, 1.0]
        assert {p["lr"] for p in points} == {report["lr_search"][name]["chosen"]}
        assert [p["run"] for p in points] == [str(out / "runs" / f"{name}-{b}s") for b in ("0.5", "1")]
        assert all((out / "runs" / f"{name}-{b}s" / "config.json").is_file() for b in ("0.5", "1"))
        assert points[-1]["val_loss"] == report["models"][name]["val_loss"]
    chosen = gpt_search["chosen"]
    other = next(t["lr"] for t in gpt_search["tried"] if t["lr"] != chosen)
    assert (out / "runs" / f"gpt-0.5s-lr{other:g}" / "config.json").is_file()  # the losing rate's run is kept
    assert not (out / "runs" / f"gpt-0.5s-lr{chosen:g}").exists()  # the winner is gpt-0.5s
    crossing = report["crossover"]["gru"]
    assert crossing["gpt_minus_model"] == pytest.approx(
        [g["val_loss"] - r["val_loss"] for g, r in zip(report["by_budget"]["gpt"], report["by_budget"]["gru"])])
    for png in ("val_loss_vs_budget.png", "val_loss_vs_params.png"):
        assert (out / png).stat().st_size > 1000
    markdown = (out / "report.md").read_text()
    assert "![val_loss_vs_budget](val_loss_vs_budget.png)" in markdown and "| gpt | 0.5 |" in markdown
    assert f"| gpt | 0.001: {gpt_search['tried'][0]['val_loss']:.4f}" in markdown
    assert "edge of the grid" in markdown  # with two rates, the choice is always at an edge


def test_the_search_picks_the_lowest_loss_and_never_a_diverged_run():
    tried = [{"lr": 1e-3, "val_loss": 2.1}, {"lr": 3e-3, "val_loss": 1.9}, {"lr": 1e-2, "val_loss": 2.4}]
    assert best_learning_rate(tried) == 3e-3
    assert best_learning_rate([{"lr": 2e-2, "val_loss": float("nan")}, *tried]) == 3e-3
    assert best_learning_rate([{"lr": 1e-2, "val_loss": 5.0}, {"lr": 1e-3, "val_loss": 4.0}]) == 1e-3


def test_a_searched_rate_keeps_the_floor_in_proportion():
    assert at_rate({"lr": 5e-3, "min_lr": 5e-4, "batch_size": 8}, 2e-3) == pytest.approx(
        {"lr": 2e-3, "min_lr": 2e-4, "batch_size": 8})
    assert at_rate({"lr": 5e-3, "min_lr": 0.0}, 1e-2)["min_lr"] == 0.0


def test_the_crossover_is_named_where_the_gpt_drops_below():
    budgets = [10, 30, 90]
    losses = {"gpt": [2.4, 2.0, 1.6], "gru": [2.0, 1.8, 1.7], "lstm": [2.2, 2.1, 2.0], "rnn": [2.5, 2.3, 2.1],
              "moe": [2.6, 2.5, 2.4]}
    found = crossovers(budgets, losses)
    assert set(found) == {"gru", "lstm", "rnn"}  # the recurrent models only
    gru = found["gru"]
    assert gru["state"] == "overtakes" and gru["between_s"] == [30, 90]
    # gap +0.2 at 30 s, -0.1 at 90 s: zero two thirds of the way along log time
    assert gru["at_s"] == pytest.approx(30 * 3 ** (2 / 3))
    assert found["lstm"]["state"] == "overtakes" and found["lstm"]["between_s"] == [10, 30]
    assert found["rnn"]["state"] == "ahead_from_smallest"
    sentence = crossover_sentence(budgets, found)
    assert "below the GRU's between 30 s and 90 s (at about 62 s" in sentence
    assert "below the LSTM's between 10 s and 30 s" in sentence
    assert "below the Elman RNN's already at the smallest budget, 10 s" in sentence
    assert sentence.startswith("The GPT") and sentence.endswith(".")


def test_the_crossover_sentence_says_when_the_gpt_never_drops_below():
    budgets = [10, 30, 90]
    found = crossovers(budgets, {"gpt": [2.4, 2.1, 1.9], "gru": [2.0, 1.8, 1.7]})
    assert found["gru"]["state"] == "behind" and "at_s" not in found["gru"]
    sentence = crossover_sentence(budgets, found)
    assert sentence == "The GPT's val loss does not drop below the GRU's within 10-90 s (0.200 nats above it at 90 s)."
    ahead_then_behind = crossovers(budgets, {"gpt": [2.0, 1.9, 1.8], "lstm": [2.1, 1.8, 1.7]})
    assert "but is above it again at 90 s" in crossover_sentence(budgets, ahead_then_behind)
    assert crossovers(budgets, {"gru": [2.0, 1.8, 1.7], "lstm": [2.1, 1.9, 1.8]}) == {}
    assert crossover_sentence(budgets, {}) == ""


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
        compare(data, 1000, [1], tmp_path / "a", ["gpt", "transformer"])
    with pytest.raises(ConfigError, match="max_iters"):
        split_settings({"max_iters": "100"}, ["gpt"])
    with pytest.raises(ConfigError, match="n_embd"):
        split_settings({"n_embd": "64"}, ["gpt"])
    with pytest.raises(ConfigError, match="MODEL.KEY"):
        split_settings({"lstm.lr": "1e-3"}, ["gpt", "gru"])
    with pytest.raises(ConfigError, match="positive"):
        compare(data, 1000, [0], tmp_path / "b", ["gpt"])
    with pytest.raises(ConfigError, match="twice"):
        compare(data, 1000, [30, 30], tmp_path / "c", ["gpt"])
    with pytest.raises(ConfigError, match="distinct positive rates"):
        compare(data, 1000, [1], tmp_path / "d", ["gpt"], lr_grid=[1e-3, -1e-3])
    with pytest.raises(SystemExit):  # not numbers: a clear message, no traceback
        main(["compare", "--data", str(data), "--budget-params", "1000", "--budgets", "30,ninety", "--out", str(tmp_path / "e")])


def test_each_model_gets_its_learning_rate_unless_set():
    shared, trains = split_settings({"batch_size": "8", "gru.lr": "3e-3", "block_size": "32"}, ["gpt", "gru"])
    assert shared == {"block_size": 32}
    assert trains["gpt"]["lr"] == 5e-3 and trains["gpt"]["min_lr"] == pytest.approx(5e-4)
    assert trains["gru"]["lr"] == 3e-3 and trains["gru"]["min_lr"] == pytest.approx(3e-4)
    assert trains["gpt"]["batch_size"] == trains["gru"]["batch_size"] == 8
