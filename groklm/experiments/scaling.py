"""`groklm scaling`: a grid of GPT sizes x token counts trained within a wall-clock budget, the
law L(N, D) = E + A / N^alpha + B / D^beta fitted to it, the compute-optimal size it predicts
(trained and measured), and what repeating the data costs.

    groklm scaling --data data/shakespeare --budget 12 --out scaling/

1. Sizes: for each target N (non-embedding parameters, --sizes), a GPT N_HEAD heads wide and
   about ASPECT times as wide as it is deep, at the width whose N is closest to the target.
   A few timed steps give each size's seconds a step (compare.seconds_per_step).
2. The grid: every size for base, 2 x base and 4 x base steps (D = steps x batch x block tokens),
   base as large as GRID_SHARE of the budget holds; largest sizes, then the third token count,
   are dropped when even MIN_STEPS does not fit. Too small a budget for two sizes and two token
   counts is refused, saying how many minutes it needs. Each (N, D) is its own run, trained from
   scratch with the cosine schedule over its own steps: an intermediate point of a longer run is
   not what a run of that length reaches (its rate has not decayed), so reading a run's curve
   part-way would bias the law's D term. Each run's loss is its mean next-token loss on the same
   fixed val windows (compare.held_out), not the few random batches of its last evaluation.
3. The law, fitted to the grid (scaling_law.fit_law), and the compute-optimal (N, D) for
   C = 6 N D FLOPs (--predict-compute, default 4 x the largest run's): that size is trained for
   that many tokens when the rest of the budget holds it, and its loss set beside the prediction.
4. Data-limited: the grid's middle size, at one token count D, trained on the first D / r tokens
   of the train split for each r of --repeats (r = 1: every token drawn about once, fresh data),
   so the data is seen about r times. Where the loss stops falling as r grows, or rises, is
   where repeating the data stops standing in for new data.

OUT/report.md, report.json, loss_vs_params.png, loss_vs_compute.png, loss_vs_repeats.png;
runs in OUT/runs/n<N>-d<D> (grid), n<N>-d<D>-r<r> (repeats), optimal-n<N>-d<D>.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from groklm.data.shards import TokenShards
from groklm.errors import ConfigError
from groklm.experiments.compare import N_HEAD, closest_width, held_out, seconds_per_step
from groklm.experiments.scaling_law import compute_optimal, fit_law, predict
from groklm.model.arch import build_model, make_config
from groklm.model.gpt import GPTConfig
from groklm.rundir import atomic_path, write_json
from groklm.train.config import split_overrides
from groklm.train.plots import save_png
from groklm.train.pretrain import VOCAB_MULTIPLE, pretrain

DEFAULT_SIZES = (10_000, 25_000, 60_000, 150_000, 400_000)  # non-embedding parameters: a CPU's minutes
DEFAULT_REPEATS = (1, 2, 4, 8, 16)
TOKEN_MULTIPLES = (1, 2, 4)  # the grid's token counts, in units of its base step count
MIN_STEPS = 50  # fewer, and warm-up and noise dominate what a run reaches
ASPECT = 32  # width per layer: 1 x 32, 2 x 64, 4 x 128, 8 x 256 ...
BLOCK_SIZE = 64
# The same recipe for every size: compare's GPT recipe (its rate searched at 400k parameters on Tiny
# Shakespeare). One rate for all sizes slightly favours the sizes near the one it was chosen for.
TRAIN_DEFAULTS = {"batch_size": 16, "lr": 5e-3, "min_lr": 5e-4, "weight_decay": 0.1, "grad_clip": 1.0, "eval_iters": 10}
# How the budget is spent: the grid, the repetition runs, and (what is left) the compute-optimal run.
GRID_SHARE = 0.5
REPEAT_SHARE = 0.2
# A run costs more than its steps: building, the final evaluation, saving, the held-out loss.
OVERHEAD_STEPS = 15
OVERHEAD_S = 1.0
COMPUTE_MULTIPLE = 4  # default --predict-compute: this many times the largest grid run's compute
MAX_EXTRAPOLATION = 100  # the predicted size is trained only within this factor of the largest grid size
REPORT_FILES = ("report.md", "report.json", "loss_vs_params.png", "loss_vs_compute.png", "loss_vs_repeats.png")


def scaling(
    data_dir: str | Path,
    budget_minutes: float,
    out_dir: str | Path,
    sizes: list[int] | None = None,
    repeats: list[int] | None = None,
    predict_compute: float | None = None,
    overrides: dict | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Train the grid, the repetition runs and the compute-optimal run into out_dir/runs/ within
    budget_minutes; fit the law; write the report; return it."""
    started = time.perf_counter()
    sizes = sorted(sizes or DEFAULT_SIZES)
    repeats = sorted(repeats or DEFAULT_REPEATS)
    if budget_minutes <= 0 or min(sizes) < 1 or min(repeats) < 1 or len(set(sizes)) != len(sizes) or len(sizes) < 2:
        raise ConfigError("scaling needs a positive --budget, at least two distinct positive --sizes and positive --repeats")
    if predict_compute is not None and predict_compute <= 0:
        raise ConfigError(f"--predict-compute must be positive FLOPs, got {predict_compute:g}")
    block, train = settings(overrides or {})
    shards = TokenShards(data_dir)
    vocab = -(-shards.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE  # as pretraining pads it
    out = Path(out_dir)
    clear_earlier(out, force)
    budget_s = budget_minutes * 60
    shapes = {target: shape_for(target, vocab, block) for target in sizes}
    counts = [non_embedding(values) for values in shapes.values()]
    if len(set(counts)) != len(counts):
        raise ConfigError(f"--sizes {','.join(map(str, sizes))} give models of {', '.join(f'{c:,}' for c in counts)} "
                          "parameters (the widths step by 8): spread the sizes further apart")
    step_s = seconds_per_step({target: ("gpt", values, train) for target, values in shapes.items()}, shards)
    tokens_per_step = train["batch_size"] * block * train.get("grad_accum", 1)
    grid = plan_grid(sizes, step_s, budget_s)
    rep_target = grid["sizes"][len(grid["sizes"]) // 2]
    rep_steps = plan_repeats(step_s[rep_target], len(repeats), budget_s, len(shards.train) // tokens_per_step)
    print(f"== plan: sizes {', '.join(f'{n:,} ({step_s[t] * 1000:.0f} ms a step)' for t, n in zip(sizes, counts) if t in grid['sizes'])}"
          f" x {', '.join(str(grid['base_steps'] * m) for m in grid['multiples'])} steps; repeats at {rep_steps} steps",
          flush=True)

    runs = []
    for target in grid["sizes"]:
        for multiple in grid["multiples"]:
            steps = grid["base_steps"] * multiple
            runs.append(train_point(shapes[target], train, steps, tokens_per_step, shards, out / "runs", "", progress))
    law = fit_law([r["N"] for r in runs], [r["D"] for r in runs], [r["val_loss"] for r in runs])
    for run, residual in zip(runs, law["residuals"]):
        run["residual"] = residual
    repetition = repetition_runs(shapes[rep_target], train, rep_steps, tokens_per_step, repeats, shards, out, progress)
    compute = predict_compute or COMPUTE_MULTIPLE * max(r["compute"] for r in runs)
    optimal = optimal_run(law, compute, vocab, block, train, tokens_per_step, max(r["N"] for r in runs), shards, out,
                          budget_s - (time.perf_counter() - started), progress)
    report = {
        "data": str(Path(data_dir).resolve()), "budget_minutes": budget_minutes, "block_size": block, "train": train,
        "tokens_per_step": tokens_per_step,
        "sizes": [{"target": t, "N": n, "n_layer": shapes[t]["n_layer"], "n_embd": shapes[t]["n_embd"],
                   "step_s": step_s[t]} for t, n in zip(sizes, counts)],
        "grid": grid, "runs": runs, "law": law, "compute_optimal": optimal, "repetition": repetition,
    }
    report["wall_s"] = time.perf_counter() - started
    write_report(out, report)
    return report


def settings(overrides: dict) -> tuple[int, dict]:
    """(block_size, training settings) from --set: training keys, and block_size."""
    model, train = split_overrides(overrides, GPTConfig)
    if set(model) - {"block_size"}:
        raise ConfigError(f"scaling --set takes training keys or block_size; got {sorted(set(model) - {'block_size'})} "
                          "(the sizes come from --sizes)")
    fixed = {"max_iters", "train_tokens"} & set(train)
    if fixed:
        raise ConfigError(f"scaling sets {', '.join(sorted(fixed))} itself; leave it out of --set")
    train = {**TRAIN_DEFAULTS, **train}
    train.setdefault("min_lr", train["lr"] / 10)
    return model.get("block_size", BLOCK_SIZE), train


def clear_earlier(out: Path, force: bool) -> None:
    earlier = [out / name for name in ("runs", *REPORT_FILES) if (out / name).exists()]
    if earlier and not force:
        raise ConfigError(f"{out} already holds a scaling study ({earlier[0].name}); pass --force to replace it, or pick another --out")
    for path in earlier:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def non_embedding(values: dict) -> int:
    return build_model("gpt", make_config("gpt", values)).num_params(non_embedding=True)


def shape_for(target: int, vocab: int, block: int) -> dict:
    """The GPT's settings for about `target` non-embedding parameters: n_layer from the aspect
    ratio (a block holds about 12 width^2 parameters, width = ASPECT x n_layer), then the width
    whose count comes closest."""
    n_layer = max(1, round((target / (12 * ASPECT**2)) ** (1 / 3)))
    base = {"vocab_size": vocab, "block_size": block, "n_layer": n_layer, "n_head": N_HEAD, "dropout": 0.0}
    return {**base, "n_embd": closest_width(lambda width: non_embedding({**base, "n_embd": width}), target)}


# ---- planning ---------------------------------------------------------------------------------


def run_seconds(steps: int, step_s: float) -> float:
    return (steps + OVERHEAD_STEPS) * step_s + OVERHEAD_S


def grid_seconds(sizes: list[int], multiples: tuple[int, ...], base: int, step_s: dict) -> float:
    return sum(run_seconds(base * m, step_s[s]) for s in sizes for m in multiples)


def plan_grid(sizes: list[int], step_s: dict, budget_s: float) -> dict:
    """{"sizes", "multiples", "base_steps"}: the most sizes (smallest first), then the most token
    counts, at the largest base step count >= MIN_STEPS that GRID_SHARE of the budget holds."""
    room = GRID_SHARE * budget_s
    for count in range(len(sizes), 1, -1):
        for multiples in (TOKEN_MULTIPLES, TOKEN_MULTIPLES[:2]):
            chosen = sizes[:count]
            per_step = sum(step_s[s] for s in chosen) * sum(multiples)
            base = int((room - grid_seconds(chosen, multiples, 0, step_s)) / per_step)
            if base >= MIN_STEPS:
                return {"sizes": chosen, "multiples": list(multiples), "base_steps": base}
    need = grid_seconds(sizes[:2], TOKEN_MULTIPLES[:2], MIN_STEPS, step_s) / GRID_SHARE
    raise ConfigError(f"--budget {budget_s / 60:g} minutes is too small: two sizes ({sizes[0]:,} and {sizes[1]:,} "
                      f"parameters) at two token counts ({MIN_STEPS} and {2 * MIN_STEPS} steps) take about "
                      f"{need * GRID_SHARE / 60:.1f} minutes here, which needs a budget of at least {need / 60:.1f} "
                      f"minutes ({GRID_SHARE:.0%} of it goes to the grid)")


def plan_repeats(step_s: float, count: int, budget_s: float, corpus_steps: int) -> int:
    """Steps of each repetition run: as many as REPEAT_SHARE of the budget holds for `count` runs,
    at most one pass over the train split (so that r = 1 is fresh data), at least MIN_STEPS."""
    fits = int((REPEAT_SHARE * budget_s / count - OVERHEAD_S) / step_s) - OVERHEAD_STEPS
    return max(MIN_STEPS, min(fits, corpus_steps))


# ---- training ---------------------------------------------------------------------------------


def train_point(values: dict, train: dict, steps: int, tokens_per_step: int, shards, runs: Path, suffix: str,
                progress: bool, extra: dict | None = None) -> dict:
    """One run of `steps` steps from scratch (a cosine schedule over them, one evaluation at the
    end); its N, D, compute and held-out loss."""
    n = non_embedding(values)
    d = steps * tokens_per_step
    run = runs / f"n{n}-d{d}{suffix}"
    print(f"== {run.name}: {values['n_layer']} x {values['n_embd']}, {steps} steps", flush=True)
    schedule = {"max_iters": steps, "eval_interval": steps, "log_interval": max(1, steps // 50),
                "warmup_iters": min(100, steps // 10)}
    start = time.perf_counter()
    pretrain(shards.dir, run, overrides={**values, **train, **schedule, **(extra or {}), "arch": "gpt"}, progress=progress)
    result = {"run": str(run), "N": n, "D": d, "steps": steps, "compute": 6 * n * d,
              "n_layer": values["n_layer"], "n_embd": values["n_embd"], "wall_s": time.perf_counter() - start}
    held_out(result, shards)
    del result["val_loss_by_position"]
    return result


def repetition_runs(values: dict, train: dict, steps: int, tokens_per_step: int, repeats: list[int], shards, out: Path,
                    progress: bool) -> dict:
    """The size `values` trained for `steps` steps on the first D / r train tokens, for each r."""
    d = steps * tokens_per_step
    points = []
    for r in repeats:
        unique = d // r
        if unique <= values["block_size"]:
            print(f"== skipping r={r}: {unique} tokens hold no window", flush=True)
            continue
        result = train_point(values, train, steps, tokens_per_step, shards, out / "runs", f"-r{r}", progress,
                             {"train_tokens": unique})
        points.append({"repeats": r, "unique_tokens": unique, "val_loss": result["val_loss"], "run": result["run"]})
    fresh = points[0]["val_loss"]
    for point in points:
        point["minus_fresh"] = point["val_loss"] - fresh
    return {"N": non_embedding(values), "D": d, "steps": steps, "n_layer": values["n_layer"], "n_embd": values["n_embd"],
            "points": points}


def optimal_run(law: dict, compute: float, vocab: int, block: int, train: dict, tokens_per_step: int, largest: int,
                shards, out: Path, left_s: float, progress: bool) -> dict:
    """The law's compute-optimal (N, D) at `compute`; that size (the closest shape) trained for
    compute / (6 N) tokens when `left_s` seconds hold it, its loss beside the law's prediction."""
    optimal = {**compute_optimal(law, compute), "trained": False}
    if not optimal["N"] <= MAX_EXTRAPOLATION * largest or not optimal["D"] >= MIN_STEPS * tokens_per_step:
        optimal["note"] = (f"not trained: {optimal['N']:,.0f} parameters for {optimal['D']:,.0f} tokens lies too far "
                           f"outside the grid (over {MAX_EXTRAPOLATION}x its largest size, or under {MIN_STEPS} steps)")
        return optimal
    values = shape_for(round(optimal["N"]), vocab, block)
    n = non_embedding(values)
    steps = max(1, round(compute / (6 * n) / tokens_per_step))
    step_s = seconds_per_step({"optimal": ("gpt", values, train)}, shards)["optimal"]
    need = run_seconds(steps, step_s)
    # Past one pass over the train split the run repeats data, which no grid run did: the law
    # cannot know what that costs (the repetition runs measure it).
    optimal.update(shape={"n_layer": values["n_layer"], "n_embd": values["n_embd"]}, N_trained=n,
                   D_trained=steps * tokens_per_step, epochs=steps * tokens_per_step / len(shards.train),
                   estimated_s=need)
    optimal["predicted_at_trained"] = predict(law, n, steps * tokens_per_step)
    if need > left_s:
        optimal["note"] = (f"not trained: it would take about {need / 60:.2f} minutes and {max(0, left_s) / 60:.2f} "
                           "are left of the budget")
        return optimal
    result = train_point(values, train, steps, tokens_per_step, shards, out / "runs", "", progress)
    Path(result["run"]).rename(out / "runs" / f"optimal-{Path(result['run']).name}")
    optimal.update(trained=True, measured=result["val_loss"], run=str(out / "runs" / f"optimal-{Path(result['run']).name}"),
                   wall_s=result["wall_s"], measured_minus_predicted=result["val_loss"] - optimal["predicted_at_trained"])
    return optimal


# ---- the report -------------------------------------------------------------------------------


def write_report(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_all(out, report)
    report["plots"] = [p.name for p in plots]
    write_json(out / "report.json", report)
    law, opt, rep = report["law"], report["compute_optimal"], report["repetition"]
    lines = [
        "# Scaling laws", "",
        f"Data: `{report['data']}`. Budget {report['budget_minutes']:g} minutes (used {report['wall_s'] / 60:.1f}). "
        f"Every run: GPT, block {report['block_size']}, batch {report['train']['batch_size']} "
        f"({report['tokens_per_step']:,} tokens a step), AdamW at lr {report['train']['lr']:g} with a cosine schedule "
        "over its own steps. N: non-embedding parameters; D: training tokens; loss: mean next-token loss (nats) "
        "on the same fixed val windows for every run.", "",
        "## The law", "",
        f"**L(N, D) = {law['E']:.3f} + {law['A']:.4g} / N^{law['alpha']:.3f} + {law['B']:.4g} / D^{law['beta']:.3f}**", "",
        f"Fitted to {len(report['runs'])} runs by least squares on log L; RMSE {law['rmse_log']:.4f} in log loss, "
        f"{law['rmse']:.4f} nats in loss. "
        + ("Five parameters from five points or fewer: many laws pass through them, so this one says little."
           if len(report["runs"]) <= 5 else "Five parameters from this few points: read the exponents as rough."), "",
        "| N | layers x width | D | steps | compute (6ND) | val loss | fitted | residual |", "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['N']:,} | {r['n_layer']} x {r['n_embd']} | {r['D']:,} | {r['steps']:,} | {r['compute']:.3g} | "
              f"{r['val_loss']:.4f} | {r['val_loss'] - r['residual']:.4f} | {r['residual']:+.4f} |" for r in report["runs"]]
    lines += ["", "## Compute-optimal size", "",
              f"At C = {opt['compute']:.3g} FLOPs (C = 6 N D) the law's best split is N = {opt['N']:,.0f}, "
              f"D = {opt['D']:,.0f} tokens ({opt['D'] / opt['N']:.1f} tokens per parameter), predicted loss {opt['loss']:.4f}.", ""]
    if "shape" in opt:
        lines += [f"Closest shape: {opt['shape']['n_layer']} x {opt['shape']['n_embd']} ({opt['N_trained']:,} parameters) for "
                  f"{opt['D_trained']:,} tokens, {opt['epochs']:.1f} passes over the train split"
                  + (" (repeated data, which no grid run saw: the law does not account for it)" if opt["epochs"] > 1 else "")
                  + f"; predicted {opt['predicted_at_trained']:.4f}."]
    lines += [f"Measured {opt['measured']:.4f} ({opt['measured_minus_predicted']:+.4f} against the prediction)."
              if opt["trained"] else opt["note"][:1].upper() + opt["note"][1:] + ".", "",
              "## Repeated data", "",
              f"{rep['n_layer']} x {rep['n_embd']} ({rep['N']:,} parameters), {rep['D']:,} tokens ({rep['steps']:,} steps) each, "
              "drawn from the first D / r tokens of the train split:", "",
              "| repeats r | unique tokens | val loss | minus fresh (r=1) |", "|---|---|---|---|"]
    lines += [f"| {p['repeats']} | {p['unique_tokens']:,} | {p['val_loss']:.4f} | {p['minus_fresh']:+.4f} |" for p in rep["points"]]
    lines += [""] + [f"![{p.stem}]({p.name})" for p in plots]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def plot_all(out: Path, report: dict) -> list[Path]:
    """Loss vs N per token count with the fitted curves; loss vs compute with the law's frontier;
    loss vs repetitions."""
    law, runs, paths = report["law"], report["runs"], []

    def save(fig, name: str) -> None:
        paths.append(save_png(fig, out / name))

    fig = Figure(figsize=(7, 4.5), dpi=100, layout="constrained")
    ax = fig.subplots()
    n_axis = np.geomspace(min(r["N"] for r in runs) / 2, max(r["N"] for r in runs) * 2, 100)
    for colour, d in enumerate(sorted({r["D"] for r in runs})):
        points = [r for r in runs if r["D"] == d]
        ax.plot([r["N"] for r in points], [r["val_loss"] for r in points], "o", color=f"C{colour}", label=f"D = {d:,}")
        ax.plot(n_axis, predict(law, n_axis, d), "-", color=f"C{colour}", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("val loss (nats / token)")
    ax.set_title(f"val loss vs N (lines: L = {law['E']:.2f} + {law['A']:.3g}/N^{law['alpha']:.2f} "
                 f"+ {law['B']:.3g}/D^{law['beta']:.2f})", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save(fig, "loss_vs_params.png")

    fig = Figure(figsize=(7, 4.5), dpi=100, layout="constrained")
    ax = fig.subplots()
    opt = report["compute_optimal"]
    c_axis = np.geomspace(min(r["compute"] for r in runs) / 2, opt["compute"] * 2, 100)
    ax.plot(c_axis, [compute_optimal(law, c)["loss"] for c in c_axis], "k-", linewidth=1, label="law: compute-optimal frontier")
    for colour, n in enumerate(sorted({r["N"] for r in runs})):
        points = [r for r in runs if r["N"] == n]
        ax.plot([r["compute"] for r in points], [r["val_loss"] for r in points], "o-", color=f"C{colour}", label=f"N = {n:,}")
    ax.plot([opt["compute"]], [opt["loss"]], "k*", markersize=12, label="predicted optimum")
    if opt["trained"]:
        ax.plot([6 * opt["N_trained"] * opt["D_trained"]], [opt["measured"]], "rX", markersize=10, label="measured")
    ax.set_xscale("log")
    ax.set_xlabel("training compute C = 6 N D (FLOPs)")
    ax.set_ylabel("val loss (nats / token)")
    ax.set_title("val loss vs compute")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save(fig, "loss_vs_compute.png")

    rep = report["repetition"]
    fig = Figure(figsize=(6, 4), dpi=100, layout="constrained")
    ax = fig.subplots()
    ax.plot([p["repeats"] for p in rep["points"]], [p["val_loss"] for p in rep["points"]], "o-")
    ax.axhline(rep["points"][0]["val_loss"], color="grey", linestyle="--", linewidth=1, label="fresh data (r = 1)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("repeats r (the same D tokens from D / r unique ones)")
    ax.set_ylabel("val loss (nats / token)")
    ax.set_title(f"repeated data: N = {rep['N']:,}, D = {rep['D']:,}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save(fig, "loss_vs_repeats.png")
    return paths
