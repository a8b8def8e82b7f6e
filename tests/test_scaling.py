"""`groklm scaling`: the law's fit recovers known parameters, the compute-optimal size is the
minimum along C = 6 N D, the budget is planned (and refused when too small), train_tokens limits
the windows a run draws, and a tiny study end to end writes its report and plots."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from groklm.cli.main import main
from groklm.errors import ConfigError
from groklm.experiments import scaling
from groklm.experiments.scaling import MIN_STEPS, non_embedding, plan_grid, shape_for
from groklm.experiments.scaling_law import compute_optimal, fit_law, predict
from groklm.train.config import TrainConfig
from groklm.train.pretrain import make_batches

from helpers.training import make_data

# Roughly the size of the terms Hoffmann et al. report, at the scales a CPU grid reaches.
TRUE_LAW = {"E": 1.5, "A": 60.0, "alpha": 0.35, "B": 300.0, "beta": 0.3}


def test_the_fit_recovers_a_known_law_from_noisy_points():
    points = list(itertools.product([1e4, 3e4, 1e5, 3e5, 1e6], [1e6, 4e6, 1.6e7, 6.4e7]))
    rng = np.random.default_rng(0)
    loss = [predict(TRUE_LAW, n, d) * (1 + 0.003 * rng.standard_normal()) for n, d in points]
    law = fit_law([n for n, _ in points], [d for _, d in points], loss)
    assert law["E"] == pytest.approx(TRUE_LAW["E"], abs=0.05)
    assert law["alpha"] == pytest.approx(TRUE_LAW["alpha"], abs=0.03)
    assert law["beta"] == pytest.approx(TRUE_LAW["beta"], abs=0.03)
    assert law["A"] == pytest.approx(TRUE_LAW["A"], rel=0.3) and law["B"] == pytest.approx(TRUE_LAW["B"], rel=0.3)
    assert law["rmse_log"] < 0.005 and len(law["residuals"]) == len(points)
    assert law["rmse"] == pytest.approx(np.sqrt(np.mean(np.square(law["residuals"]))))


def test_the_compute_optimal_size_is_the_minimum_along_the_compute_line():
    for compute in (1e12, 1e15, 1e18):
        optimal = compute_optimal(TRUE_LAW, compute)
        n = np.geomspace(1e2, 1e12, 400_001)
        brute = n[np.argmin(predict(TRUE_LAW, n, compute / (6 * n)))]
        assert optimal["N"] == pytest.approx(brute, rel=1e-3)
        assert optimal["N"] * optimal["D"] * 6 == pytest.approx(compute)
        assert optimal["loss"] == pytest.approx(predict(TRUE_LAW, brute, compute / (6 * brute)), rel=1e-9)


def test_the_grid_fills_its_share_of_the_budget_and_drops_sizes_before_refusing():
    step_s = {1000: 0.01, 2000: 0.02, 4000: 0.04}
    plan = plan_grid([1000, 2000, 4000], step_s, budget_s=600)
    assert plan["sizes"] == [1000, 2000, 4000] and plan["multiples"] == [1, 2, 4] and plan["base_steps"] > MIN_STEPS
    smaller = plan_grid([1000, 2000, 4000], step_s, budget_s=30)
    assert len(smaller["sizes"]) * len(smaller["multiples"]) < 9 and smaller["base_steps"] >= MIN_STEPS


def test_too_small_a_budget_is_refused_with_the_minutes_it_needs():
    # Two sizes at 50 and 100 steps: (65 x 0.1 + 1) + (115 x 0.1 + 1) + (65 x 0.2 + 1) + (115 x 0.2 + 1) = 58 s,
    # half the budget: 116 s = 1.9 minutes.
    with pytest.raises(ConfigError, match=r"--budget 1 minutes is too small.*1\.0 minutes here.*at least 1\.9 minutes"):
        plan_grid([1000, 2000], {1000: 0.1, 2000: 0.2}, budget_s=60)


def test_a_size_is_the_width_closest_to_its_target():
    for target in (5_000, 60_000, 400_000):
        values = shape_for(target, 64, 32)
        n = non_embedding(values)
        for other in (values["n_embd"] - 8, values["n_embd"] + 8):
            assert abs(n - target) <= abs(non_embedding({**values, "n_embd": other}) - target)


def test_train_tokens_limits_the_windows_a_run_draws():
    tokens = np.arange(5000, dtype=np.uint16)  # each token is its own position
    block = 16

    def seen(**settings) -> set[int]:
        batches = make_batches(tokens, TrainConfig(batch_size=8, **settings), block)
        positions = set()
        for step in range(200):
            for inputs, targets in batches(step, range(1)):
                positions.update(inputs.flatten().tolist() + targets.flatten().tolist())
        return positions

    assert max(seen()) > 1000
    limited = seen(train_tokens=100)
    assert limited == set(range(100))  # 200 steps of 8 windows cover every one of the 84 starts
    with pytest.raises(ConfigError, match="no window"):
        make_batches(tokens, TrainConfig(train_tokens=block), block)
    with pytest.raises(ConfigError, match="train_tokens"):
        TrainConfig(train_tokens=-1)


def test_a_tiny_study_writes_the_law_the_optimum_and_the_repetition_figures(tmp_path, monkeypatch):
    # A fixed step time (ten times the real one), so that the plan does not move with the machine's
    # load: of the 60 s budget, 30 s for the grid hold 2 sizes x 2 token counts (76 and 152 steps),
    # 12 s the two repetition runs (85 steps), and the rest the compute-optimal run.
    monkeypatch.setattr(scaling, "seconds_per_step", lambda plans, shards: {name: 0.05 for name in plans})
    data = make_data(tmp_path / "data", n_tokens=20000)
    out = tmp_path / "scaling"
    main(["scaling", "--data", str(data), "--budget", "1", "--out", str(out), "--sizes", "800,3000",
          "--repeats", "1,4", "--predict-compute", "1e8", "--no-progress",
          "--set", "batch_size=4", "block_size=16", "device=cpu"])
    report = json.loads((out / "report.json").read_text())
    assert set(report["law"]) >= {"E", "A", "alpha", "B", "beta", "rmse_log", "rmse", "residuals"}
    assert [r["steps"] for r in report["runs"]] == [76, 152] * 2 and len(report["law"]["residuals"]) == 4
    assert report["repetition"]["steps"] == 85
    assert {r["N"] for r in report["runs"]} == {s["N"] for s in report["sizes"]}
    for run in report["runs"]:
        assert run["D"] == run["steps"] * 4 * 16 and run["compute"] == 6 * run["N"] * run["D"]
        assert (out / "runs" / f"n{run['N']}-d{run['D']}" / "model.safetensors").is_file()
    optimal = report["compute_optimal"]
    assert optimal["compute"] == 1e8 and optimal["trained"] and np.isfinite(optimal["measured"])
    points = report["repetition"]["points"]
    assert [p["repeats"] for p in points] == [1, 4]
    assert points[1]["unique_tokens"] == report["repetition"]["D"] // 4
    for name in ("loss_vs_params.png", "loss_vs_compute.png", "loss_vs_repeats.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG" and name in report["plots"]
    assert "## The law" in (out / "report.md").read_text()
    with pytest.raises(ConfigError, match="already holds a scaling study"):
        scaling.scaling(data, 1, out)
