"""`groklm compare`: GPT, RNN, LSTM and GRU (and a mixture of experts, a mixture of depths, Mamba, RWKV
and a Jamba-style hybrid) trained side by side at an equal parameter budget and at one or more equal
wall-clock budgets on the same data, measured.

    groklm compare --data data/shakespeare --budget-params 400000 --budgets 30,90,270 --out cmp/
    groklm compare --data data/shakespeare --budget-params 400000 --budget-seconds 90 --out moe/ \\
        --models gpt,moe --moe-experts 8 --moe-top-k 2
    groklm compare --data data/shakespeare --budget-params 400000 --budget-seconds 90 --out mod/ --models gpt,mod

For each model: the width whose parameter count comes closest to the budget (for "moe", the
GPT's shape with each MLP split into experts, so the *active* parameters per token match the
dense model's; for "mod", the GPT's shape with every other block routed, MOD_CAPACITY of the
tokens going through it: the same parameters, fewer FLOPs per token); a few timed steps, the
models taking turns, to learn its speed; then, at each wall-clock budget, as many steps as the
budget holds, run by `groklm pretrain` into OUT/runs/<model>-<budget>s (a normal run directory).
Every model sees the same batches in the same order and the same schedule shape at its family's
own peak learning rate, chosen by a search at the smallest budget (each rate of the grid trained
for that budget; the lowest held-out val loss wins and is kept for every budget: a search at every budget would cost the
grid size over again, and the best rate tends to fall only a little as runs grow longer, so the
larger budgets may sit slightly off their own best). Step counts differ, and that is the point: it is what each architecture does
with the same seconds. Since a busy machine makes the real times drift from the plan, every
val-loss curve of the largest budget is also read at one common wall time and at one common
token count. OUT/report.md (with report.json beside it) holds the table, val loss against wall
time, tokens seen and position in the context, training tokens/s, a sample from each model, and,
with several budgets, final val loss against the budget, against parameters x tokens seen, and
where the GPT overtakes each recurrent model.
"""

from __future__ import annotations

import math
import shutil
import statistics
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from groklm.data.shards import TokenShards, get_batch
from groklm.errors import ConfigError
from groklm.infer.decode import generate
from groklm.model.arch import build_model, load_model, make_config
from groklm.model.moe import active_params
from groklm.rundir import METRICS_FILE, TOKENIZER_DIR, atomic_path, write_json
from groklm.tokenizer import load_tokenizer
from groklm.train.config import TrainConfig, parse_value
from groklm.train.distributed import Distributed
from groklm.train.loop import Setup, make_optimizer, resolve_device, resolve_dtype, train_step
from groklm.train.plots import read_metrics, save_png
from groklm.train.pretrain import loss_function, make_batches, pretrain

MODELS = ("gpt", "rnn", "lstm", "gru", "moe", "mod", "mamba", "rwkv", "jamba")
DEFAULT_MODELS = "gpt,rnn,lstm,gru"
# Depth is fixed per family and width is sized to the budget. Four layers is a small GPT;
# two is the usual depth of an RNN language model (more rarely helps them). Mamba, RWKV and the
# hybrid (one attention layer, three Mamba layers) stack like a transformer: the GPT's depth.
LAYERS = {"gpt": 4, "moe": 4, "mod": 4, "rnn": 2, "lstm": 2, "gru": 2, "mamba": 4, "rwkv": 4, "jamba": 4}
N_HEAD = 4
WIDTH_STEP = 8
# The same batches and recipe for every model, but each family's own peak learning rate (one rate
# for all would compare how well each suits that rate): each family's best of 2e-3, 5e-3 and 1e-2
# in 400-step runs at 400k parameters on Tiny Shakespeare (characters). min_lr is a tenth of it.
# The best rate moves with the data: on BPE-coded Python (4096 tokens, 1.5M parameters) the GPT
# and the Elman RNN did best at 2e-3 and the GRU at 5e-3; set them with --set gpt.lr=2e-3 ...
TRAIN_DEFAULTS = {"batch_size": 16, "weight_decay": 0.1, "grad_clip": 1.0, "eval_iters": 10}
# Mamba, RWKV, jamba and mod start at the GPT's rate: not yet measured here, so the default search matters.
LEARNING_RATES = {"gpt": 5e-3, "moe": 5e-3, "mod": 5e-3, "rnn": 5e-3, "lstm": 1e-2, "gru": 1e-2, "mamba": 5e-3, "rwkv": 5e-3,
                  "jamba": 5e-3}
# The default search: each family's rate above, halved and doubled. The best rate moves with the
# data and the budget; the moves measured so far (above) stay within about a factor of two.
LR_SEARCH_FACTORS = (0.5, 1.0, 2.0)
# The models the GPT's crossover is stated against: those that carry a fixed-size state instead of attention.
RECURRENT = {"rnn": "Elman RNN", "lstm": "LSTM", "gru": "GRU", "mamba": "Mamba", "rwkv": "RWKV"}
# "mod": the share of tokens a routed block takes, every other block routed (the paper's 12.5%, mod_every=2).
MOD_CAPACITY = 0.125
SHARED_MODEL_KEYS = ("block_size", "dropout", "n_layer")
BLOCK_SIZE = 64
N_EVALS = 10  # validation points on each curve
TIMED_ROUNDS = 8  # steps timed per model (after a warm-up step) to size its run
HELD_OUT_WINDOWS = 256  # windows of the val split every model's final loss is measured on
BUDGET_KEYS = ("val_loss", "params", "active_params", "steps", "tokens_seen", "wall_s", "run")  # report.json's by_budget
REPORT_FILES = ("report.md", "report.json", "val_loss_vs_time.png", "val_loss_vs_tokens.png",
                "val_loss_by_position.png", "tokens_per_sec.png", "expert_load.png", "val_loss_vs_budget.png",
                "val_loss_vs_params.png")


def compare(
    data_dir: str | Path,
    budget_params: int,
    budgets: list[float],
    out_dir: str | Path,
    models: list[str] | None = None,
    lr_grid: list[float] | None = None,
    moe_experts: int = 8,
    moe_top_k: int = 2,
    overrides: dict | None = None,
    prompt: str | None = None,
    sample_tokens: int = 200,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Train every model in `models` at each wall-clock budget (seconds) into out_dir/runs/; write
    the report; return it.

    lr_grid: the peak learning rates searched at the smallest budget, for every family; None: each
    family's LEARNING_RATES rate times LR_SEARCH_FACTORS; empty: no search, each family's
    LEARNING_RATES rate. A model whose rate --set gives (lr=..., or MODEL.lr=...) is not searched."""
    models = check_models(models or DEFAULT_MODELS.split(","), budget_params, budgets)
    budgets = sorted(budgets)
    if sample_tokens < 0:
        raise ConfigError(f"--sample-tokens must be >= 0, got {sample_tokens}")
    if lr_grid is not None and (any(lr <= 0 for lr in lr_grid) or len(set(lr_grid)) != len(lr_grid)):
        raise ConfigError(f"--lr-search takes distinct positive rates; got {','.join(f'{lr:g}' for lr in lr_grid)}")
    overrides = overrides or {}
    shared_model, trains = split_settings(overrides, models)
    shards = TokenShards(data_dir)
    tokenizer = load_tokenizer(shards.dir / TOKENIZER_DIR)  # for the samples; missing, it fails before any training
    vocab = -(-shards.vocab_size // 64) * 64  # as pretraining pads it
    out = Path(out_dir)
    clear_earlier(out, force)
    plans = {name: (*size_model(name, budget_params, vocab, shared_model, moe_experts, moe_top_k), trains[name])
             for name in models}
    step_seconds = seconds_per_step(plans, shards)
    runs, searches = {}, {}
    for name, (arch, values, train) in plans.items():
        print(f"== {name}: {step_seconds[name]:.3f} s a step", flush=True)
        if "lr" in overrides or f"{name}.lr" in overrides or lr_grid == []:
            grid = [train["lr"]]
        else:
            grid = lr_grid or [LEARNING_RATES[name] * factor for factor in LR_SEARCH_FACTORS]
        smallest, searches[name] = search_learning_rate(arch, values, train, grid, shards, budgets[0], step_seconds[name],
                                                        out / "runs", name, progress)
        runs[name] = {budgets[0]: smallest}
        for budget in budgets[1:]:
            print(f"== {name}: {budget:g} s at lr {searches[name]['chosen']:g}", flush=True)
            result = train_model(arch, values, at_rate(train, searches[name]["chosen"]), shards, budget,
                                 step_seconds[name], run_path(out / "runs", name, budget), progress)
            held_out(result, shards)
            runs[name][budget] = result
    largest = {name: by_budget[budgets[-1]] for name, by_budget in runs.items()}
    samples(largest, shards, tokenizer, prompt, sample_tokens)
    report = build_report(runs, searches, data_dir, budget_params, budgets)
    write_report(out, report)
    return report


def check_models(models: list[str], budget_params: int, budgets: list[float]) -> list[str]:
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise ConfigError(f"--models takes names from {', '.join(MODELS)}; got {','.join(models) or 'none'}")
    if len(set(models)) != len(models):
        raise ConfigError(f"--models names a model twice: {','.join(models)}")
    if budget_params < 1 or not budgets or any(b <= 0 for b in budgets):
        raise ConfigError("--budget-params and every wall-clock budget must be positive")
    if len(set(budgets)) != len(budgets):
        raise ConfigError(f"--budgets names a budget twice: {','.join(f'{b:g}' for b in budgets)}")
    return models


def split_settings(overrides: dict, models: list[str]) -> tuple[dict, dict[str, dict]]:
    """(model settings every model shares, each model's training settings) from --set:
    KEY=VALUE for every model, MODEL.KEY=VALUE (e.g. gru.lr=3e-3) for one."""
    train_fields = {f.name: f for f in fields(TrainConfig)}
    shared = {"block_size": BLOCK_SIZE}
    common, own = {}, {name: {} for name in models}
    for key, value in overrides.items():
        name, _, field = key.rpartition(".")
        if name and (name not in own or field not in train_fields):
            raise ConfigError(f"--set {key}: MODEL.KEY takes one of the models compared ({', '.join(models)}) "
                              "and a training key")
        if name:
            own[name][field] = parse_value(field, value, train_fields[field].type)
        elif key in train_fields:
            common[key] = parse_value(key, value, train_fields[key].type)
        elif key in SHARED_MODEL_KEYS:
            shared[key] = parse_value(key, value, "float" if key == "dropout" else "int")
        else:
            raise ConfigError(f"compare --set takes training keys or {', '.join(SHARED_MODEL_KEYS)}; got {key!r} "
                              "(each model's width is sized to --budget-params)")
    trains = {}
    for name in models:
        train = {**TRAIN_DEFAULTS, "lr": LEARNING_RATES[name], **common, **own[name]}
        if "max_iters" in train:
            raise ConfigError("compare sets max_iters from --budget-seconds; leave it out of --set")
        train.setdefault("min_lr", train["lr"] / 10)
        trains[name] = train
    return shared, trains


def clear_earlier(out: Path, force: bool) -> None:
    earlier = [out / name for name in ("runs", *REPORT_FILES) if (out / name).exists()]
    if earlier and not force:
        raise ConfigError(f"{out} already holds a comparison ({earlier[0].name}); pass --force to replace it, or pick another --out")
    for path in earlier:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


# ---- sizing -----------------------------------------------------------------------------------


def size_model(name: str, budget: int, vocab: int, shared: dict, experts: int, top_k: int) -> tuple[str, dict]:
    """(arch for pretrain, model settings): the width whose parameter count is closest to the budget.
    "moe" is the budget-sized GPT with each MLP split into `experts` experts of 1/top_k its width:
    the same active parameters per token (plus a small router), experts/top_k times the MLP weights.
    "mod" is the budget-sized GPT with mixture of depths (MOD_CAPACITY, every other block)."""
    family = "gpt" if name in ("moe", "mod") else name
    base = {"vocab_size": vocab, "n_layer": LAYERS[name], **shared}
    if family in ("gpt", "jamba"):  # the hybrid's attention layers have heads too
        base["n_head"] = N_HEAD
    best = closest_width(lambda width: count_params(family, {**base, "n_embd": width}), budget)
    values = {**base, "n_embd": best}
    if name == "moe":
        values.update(moe_experts=experts, moe_top_k=top_k, mlp_hidden=max(1, 4 * best // top_k))
    if name == "mod":
        values["mod_capacity"] = MOD_CAPACITY
    return family, values


def closest_width(params_at, budget: int) -> int:
    """The multiple of WIDTH_STEP whose parameter count params_at(width) is closest to the budget.
    Parameters grow with width, so: double until past the budget, then bisect."""
    lo, hi = 0, 1  # in units of WIDTH_STEP; params_at(lo) < budget <= params_at(hi) once found
    while params_at(hi * WIDTH_STEP) < budget:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if params_at(mid * WIDTH_STEP) < budget else (lo, mid)
    candidates = [w * WIDTH_STEP for w in (lo, hi) if w > 0]
    return min(candidates, key=lambda width: abs(params_at(width) - budget))


def count_params(arch: str, values: dict) -> int:
    return build_model(arch, make_config(arch, values)).num_params()


# ---- training ---------------------------------------------------------------------------------


def train_model(arch: str, values: dict, train: dict, shards, budget_seconds: float, step_s: float, run: Path,
                progress: bool) -> dict:
    """Fit the step count to the budget, train with `pretrain`; the run's figures."""
    # Evaluation is part of the wall time: N_EVALS evals of eval_iters forward passes (~1/3 of a step each).
    eval_steps = N_EVALS * train["eval_iters"] / 3
    max_iters = max(N_EVALS, int(budget_seconds / step_s - eval_steps))
    schedule = {"max_iters": max_iters, "eval_interval": max(1, max_iters // N_EVALS),
                "log_interval": max(1, max_iters // 50), "warmup_iters": min(100, max_iters // 10)}
    pretrain(shards.dir, run, overrides={**values, **train, **schedule, "arch": arch}, progress=progress)
    model = load_model(run)
    records = read_metrics(run / METRICS_FILE)
    tokens_per_step = train["batch_size"] * values["block_size"] * train.get("grad_accum", 1)
    curve = [{"step": r["step"], "elapsed": r["elapsed"], "tokens": r["step"] * tokens_per_step, "val_loss": r["val_loss"]}
             for r in records if "val_loss" in r]
    speeds = [r["tokens_per_sec"] for r in records[1:]] or [records[-1]["tokens_per_sec"]]  # the first window includes warm-up
    result = {
        "arch": arch, "run": str(run), "model": model.config.to_dict(), "train": train,
        "params": model.num_params(), "active_params": active_params(model),
        "seconds_per_step_measured": step_s, "steps": records[-1]["step"],
        "tokens_seen": records[-1]["step"] * tokens_per_step, "wall_s": records[-1]["elapsed"],
        "tokens_per_sec": sorted(speeds)[len(speeds) // 2], "curve": curve,
    }
    if values.get("moe_experts"):
        result["expert_load"] = [{"step": r["step"], "load": [r[f"moe_load_{e}"] for e in range(values["moe_experts"])],
                                  "dropped": r["moe_dropped"]} for r in records]
    return result


def search_learning_rate(arch: str, values: dict, train: dict, grid: list[float], shards, budget: float, step_s: float,
                         runs: Path, name: str, progress: bool) -> tuple[dict, dict]:
    """Train the model at each rate of `grid` for `budget` seconds; (the run at the rate with the
    lowest held-out val loss, the search's record). That run is the model's run at this budget,
    moved to runs/<name>-<budget>s; the others stay beside it as runs/<name>-<budget>s-lr<rate>."""
    final = run_path(runs, name, budget)
    if len(grid) == 1:
        result = train_model(arch, values, at_rate(train, grid[0]), shards, budget, step_s, final, progress)
        held_out(result, shards)
        return result, {"budget_s": budget, "tried": [], "chosen": grid[0]}
    results = {}
    for lr in grid:
        print(f"== {name}: {budget:g} s at lr {lr:g} (search)", flush=True)
        results[lr] = train_model(arch, values, at_rate(train, lr), shards, budget, step_s,
                                  runs / f"{final.name}-lr{lr:g}", progress)
        held_out(results[lr], shards)
    tried = [{"lr": lr, "val_loss": r["val_loss"], "steps": r["steps"]} for lr, r in results.items()]
    chosen = best_learning_rate(tried)
    result = results[chosen]
    Path(result["run"]).rename(final)
    result["run"] = str(final)
    return result, {"budget_s": budget, "tried": tried, "chosen": chosen}


def best_learning_rate(tried: list[dict]) -> float:
    """The rate of the lowest val loss among [{"lr", "val_loss"}, ...]; a diverged run (NaN) never wins."""
    return min(tried, key=lambda t: (math.isnan(t["val_loss"]), t["val_loss"]))["lr"]


def at_rate(train: dict, lr: float) -> dict:
    """The training settings with peak rate `lr`, the floor min_lr kept in the same proportion to it."""
    return {**train, "lr": lr, "min_lr": train["min_lr"] * lr / train["lr"]}


def run_path(runs: Path, name: str, budget: float) -> Path:
    return runs / f"{name}-{budget:g}s"


def seconds_per_step(plans: dict, shards) -> dict[str, float]:
    """Median wall time of one optimizer step (forward, backward, AdamW) of each planned model.
    The models take turns, one step each per round, so that a machine busy with other work slows
    them alike and their step counts stay in proportion to their real speeds."""
    steppers = {name: stepper(arch, values, train, shards) for name, (arch, values, train) in plans.items()}
    for step in steppers.values():
        step(0)  # warm-up: first-call allocations and kernel choices
    times = {name: [] for name in plans}
    for step_number in range(1, TIMED_ROUNDS + 1):
        for name, step in steppers.items():
            times[name].append(step(step_number))
    return {name: statistics.median(t) for name, t in times.items()}


def stepper(arch: str, values: dict, train: dict, shards):
    """A function step(i) -> seconds taken by training step i of a fresh model, as the loop runs it."""
    cfg = TrainConfig.from_dict(train)
    device = resolve_device(cfg)
    config = make_config(arch, values)
    model = build_model(arch, config).to(device)
    setup = Setup(model=model, batches=make_batches(shards.train, cfg, values["block_size"]), val_batch=None,
                  tokens_per_micro=0, run_dir=Path("."), dist=Distributed(), device=device, loss_fn=loss_function(config))
    optimizer = make_optimizer(model, cfg, device)
    dtype = resolve_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def step(i: int) -> float:
        start = time.perf_counter()
        loss, _ = train_step(model, optimizer, scaler, setup.batches(i, range(cfg.grad_accum)), cfg.grad_accum,
                             setup, dtype, cfg.grad_clip)
        loss.item()  # wait for the device
        return time.perf_counter() - start

    return step


# ---- measuring --------------------------------------------------------------------------------


def held_out(result: dict, shards) -> None:
    """The run's loss on the same fixed val windows as every other run's: its final val loss."""
    model = load_model(result["run"])
    result["val_loss_by_position"] = loss_by_position(model, shards.val, model.config.block_size)
    result["val_loss"] = sum(result["val_loss_by_position"]) / len(result["val_loss_by_position"])


def samples(results: dict, shards, tokenizer, prompt: str | None, sample_tokens: int) -> None:
    """A sample from every model, from the same prompt."""
    ids = tokenizer.encode(prompt) if prompt else shards.val[:32].astype(np.int64).tolist()
    for result in results.values():
        model = load_model(result["run"])
        with torch.no_grad():
            new = generate(model, torch.tensor([ids]), sample_tokens, temperature=0.8, top_k=50, seed=0)[0, len(ids):]
        kept = [i for i in new.tolist() if i < tokenizer.vocab_size]
        result["sample"] = {"prompt": tokenizer.decode(ids), "continuation": tokenizer.decode(kept)}


def loss_by_position(model, tokens, block_size: int) -> list[float]:
    """Mean next-token loss at each position 0..block_size-1 of the context, over HELD_OUT_WINDOWS
    windows spread evenly over the val split. Position t predicts from t+1 tokens of context, so
    the curve shows how much a model gains from seeing further back (its mean is the val loss)."""
    starts = np.unique(np.linspace(0, len(tokens) - block_size - 1, HELD_OUT_WINDOWS).astype(np.int64))
    total = torch.zeros(block_size)
    with torch.no_grad():
        for chunk in np.array_split(starts, max(1, len(starts) // 64)):
            x, y = get_batch(tokens, chunk, block_size)
            logits, _ = model(x)
            total += F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none").sum(dim=0)
    return (total / len(starts)).tolist()


# ---- the report -------------------------------------------------------------------------------


def build_report(runs: dict, searches: dict, data_dir, budget_params: int, budgets: list[float]) -> dict:
    """The figures. "models": the runs at the largest budget, with their final val loss and each
    val-loss curve read at the same wall time and at the same tokens seen (where the
    quickest-to-finish and the least-fed model stopped); "by_budget": every model's final figures
    at each budget; "lr_search": how each family's rate was chosen; "crossover": where the GPT's
    val loss drops below each recurrent model's."""
    results = {name: by_budget[budgets[-1]] for name, by_budget in runs.items()}
    common = {"elapsed": min(r["wall_s"] for r in results.values()), "tokens": min(r["tokens_seen"] for r in results.values())}
    for result in results.values():
        result["val_loss_at_equal_time"] = loss_at(result["curve"], "elapsed", common["elapsed"])
        result["val_loss_at_equal_tokens"] = loss_at(result["curve"], "tokens", common["tokens"])
    by_budget = {name: [{"budget_s": budget, **{key: r[key] for key in BUDGET_KEYS}, "lr": r["train"]["lr"]}
                        for budget, r in sorted(by.items())] for name, by in runs.items()}
    crossover = crossovers(budgets, {name: [point["val_loss"] for point in points] for name, points in by_budget.items()})
    report = {
        "data": str(Path(data_dir).resolve()), "budget_params": budget_params, "budgets": budgets,
        "budget_seconds": budgets[-1], "models": results, "equal_time_s": common["elapsed"],
        "equal_tokens": common["tokens"],
        "best": {key: min(results, key=lambda name: results[name][key])
                 for key in ("val_loss", "val_loss_at_equal_time", "val_loss_at_equal_tokens")},
        "gaps": gaps(results), "by_budget": by_budget, "lr_search": searches, "crossover": crossover,
        "crossover_sentence": crossover_sentence(budgets, crossover),
    }
    report["verdict"] = verdict(report)
    return report


def crossovers(budgets: list[float], losses: dict[str, list[float]]) -> dict[str, dict]:
    """Where the GPT's final val loss drops below each recurrent model's, from the losses at each
    budget (ascending): {model: {"gpt_minus_model": [...], "state", "between_s", "at_s"}}.
    state "ahead_from_smallest": the GPT is lower already at the smallest budget; "overtakes": it
    is behind (or level) at between_s[0] and lower at between_s[1], at_s being where the gap, read
    linearly against log time, crosses zero; "behind": it is never lower. Only the first crossing
    is located: "gpt_minus_model" shows any later change of lead. {} without a GPT."""
    if "gpt" not in losses:
        return {}
    out = {}
    for name in (n for n in losses if n in RECURRENT):
        gap = [g - r for g, r in zip(losses["gpt"], losses[name])]
        entry = {"gpt_minus_model": gap, "state": "behind"}
        if gap[0] < 0:
            entry["state"] = "ahead_from_smallest"
        else:
            for (t0, g0), (t1, g1) in zip(zip(budgets, gap), zip(budgets[1:], gap[1:])):
                if g0 >= 0 > g1:
                    log_t = math.log(t0) + (math.log(t1) - math.log(t0)) * g0 / (g0 - g1)
                    entry.update(state="overtakes", between_s=[t0, t1], at_s=math.exp(log_t))
                    break
        out[name] = entry
    return out


def crossover_sentence(budgets: list[float], crossover: dict[str, dict]) -> str:
    """The crossovers in words ("" when there is no GPT or no recurrent model to compare)."""
    span = f"{budgets[0]:g}-{budgets[-1]:g} s" if len(budgets) > 1 else f"{budgets[0]:g} s"
    parts = []
    for name, entry in crossover.items():
        model, last = RECURRENT[name], entry["gpt_minus_model"][-1]
        if entry["state"] == "behind":
            parts.append(f"the GPT's val loss does not drop below the {model}'s within {span} "
                         f"({last:.3f} nats above it at {budgets[-1]:g} s)")
            continue
        if entry["state"] == "ahead_from_smallest":
            text = f"the GPT's val loss is below the {model}'s already at the smallest budget, {budgets[0]:g} s"
        else:
            low, high = entry["between_s"]
            text = (f"the GPT's val loss drops below the {model}'s between {low:g} s and {high:g} s "
                    f"(at about {entry['at_s']:.0f} s, read on log time)")
        parts.append(text + (f", but is above it again at {budgets[-1]:g} s" if last >= 0 else
                             f" ({-last:.3f} nats below it at {budgets[-1]:g} s)"))
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + "." if text else ""


def loss_at(curve: list[dict], key: str, value: float) -> float:
    """The val-loss curve read at `value` of `key` ("elapsed" or "tokens"), linearly interpolated;
    before the first point the first value, past the last the last."""
    points = [(p[key], p["val_loss"]) for p in curve]
    if value <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= value <= x1:
            return y0 + (y1 - y0) * (value - x0) / max(x1 - x0, 1e-9)
    return points[-1][1]


def gaps(results: dict) -> dict:
    """Each other model against the GPT (the dense GPT, against moe): positive means the GPT is lower."""
    if "gpt" not in results:
        return {}
    gpt = results["gpt"]
    return {
        name: {"val_loss_minus_gpt": r["val_loss"] - gpt["val_loss"],
               "at_equal_time_minus_gpt": r["val_loss_at_equal_time"] - gpt["val_loss_at_equal_time"],
               "at_equal_tokens_minus_gpt": r["val_loss_at_equal_tokens"] - gpt["val_loss_at_equal_tokens"],
               "gpt_tokens_per_sec_ratio": gpt["tokens_per_sec"] / r["tokens_per_sec"]}
        for name, r in results.items() if name != "gpt"
    }


def verdict(report: dict) -> str:
    models = report["models"]

    def lead(key: str) -> str:
        ranked = sorted(models, key=lambda name: models[name][key])
        text = f"{ranked[0]} ({models[ranked[0]][key]:.4f})"
        if len(ranked) > 1:
            text += f", {models[ranked[1]][key] - models[ranked[0]][key]:.4f} below {ranked[1]}"
        return text

    return (f"lowest val loss at the end: {lead('val_loss')}; at equal wall time ({report['equal_time_s']:.0f} s): "
            f"{lead('val_loss_at_equal_time')}; at equal tokens ({report['equal_tokens']:,}): {lead('val_loss_at_equal_tokens')}")


def summary_table(report: dict) -> str:
    rows = ["| model | params (active) | width x layers | lr | steps | tokens seen | wall s | train tokens/s | val loss | "
            "at equal time | at equal tokens |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["models"].items():
        params = f"{r['params']:,}" + (f" ({r['active_params']:,})" if r["active_params"] != r["params"] else "")
        rows.append(f"| {name} | {params} | {r['model']['n_embd']} x {r['model']['n_layer']} | {r['train']['lr']:g} | {r['steps']:,} | "
                    f"{r['tokens_seen']:,} | {r['wall_s']:.0f} | {r['tokens_per_sec']:,.0f} | {r['val_loss']:.4f} | "
                    f"{r['val_loss_at_equal_time']:.4f} | {r['val_loss_at_equal_tokens']:.4f} |")
    return "\n".join(rows)


def write_report(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_curves(report, out)
    report["plots"] = [p.name for p in plots]
    write_json(out / "report.json", report)
    models = report["models"]
    lines = [
        "# Architectures compared at equal parameters and equal wall time", "",
        f"Data: `{report['data']}`. Budget per model: about {report['budget_params']:,} parameters "
        f"(active, for a mixture of experts) and {' / '.join(f'{b:g}' for b in report['budgets'])} s of training. "
        f"Same batches (batch size {next(iter(models.values()))['train']['batch_size']}), AdamW with each model's "
        "peak learning rate (lr) and a cosine schedule over its own step count.", "",
        *budget_section(report),
        summary_table(report), "",
        f"**{report['verdict']}.**", "",
        f"val loss: mean next-token cross-entropy (nats) over every position of the same {HELD_OUT_WINDOWS} "
        f"windows of the val split for every model, after training. at equal time / tokens: each model's val-loss curve read at "
        f"{report['equal_time_s']:.0f} s and at {report['equal_tokens']:,} tokens seen (where the first model "
        "stopped): the first is the race the wall-clock budget sets, the second separates what an architecture "
        "learns per token from how fast it runs. train tokens/s: median over the run, evaluation excluded. "
        "Timings are wall-clock: on a busy machine they move with the load.", "",
    ]
    if report["gaps"]:
        lines += ["| vs gpt | val loss - gpt's | at equal time - gpt's | at equal tokens - gpt's | gpt's tokens/s ÷ its |",
                  "|---|---|---|---|---|"]
        lines += [f"| {name} | {g['val_loss_minus_gpt']:+.4f} | {g['at_equal_time_minus_gpt']:+.4f} | "
                  f"{g['at_equal_tokens_minus_gpt']:+.4f} | {g['gpt_tokens_per_sec_ratio']:.2f}x |"
                  for name, g in report["gaps"].items()]
        lines.append("")
    lines += context_table(report) + [f"![{p.stem}]({p.name})" for p in plots] + ["", "## Samples", ""]
    first = next(iter(models.values()))["sample"]["prompt"]
    lines += ["Each continues the same prompt (temperature 0.8, top-k 50, seed 0):", "", "```", first, "```", ""]
    for name, r in models.items():
        lines += [f"**{name}**", "", "```", r["sample"]["continuation"], "```", ""]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines))


def budget_section(report: dict) -> list[str]:
    """Final val loss at every budget, the crossover sentence, and the learning-rate search."""
    lines = []
    if len(report["budgets"]) > 1:
        lines += ["## Across budgets", "", "| model | budget s | lr | params | steps | tokens seen | wall s | val loss |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {name} | {p['budget_s']:g} | {p['lr']:g} | {p['active_params']:,} | {p['steps']:,} | "
                  f"{p['tokens_seen']:,} | {p['wall_s']:.0f} | {p['val_loss']:.4f} |"
                  for name, points in report["by_budget"].items() for p in points]
        lines.append("")
    if report["crossover_sentence"]:
        lines += [f"**{report['crossover_sentence']}**", ""]
    searched = {name: search for name, search in report["lr_search"].items() if search["tried"]}
    if searched:
        lines += [f"Peak learning rate: each family's lowest held-out val loss after {report['budgets'][0]:g} s, "
                  "kept for every budget.", "", "| model | val loss at each rate | chosen |", "|---|---|---|"]
        lines += [f"| {name} | " + ", ".join(f"{t['lr']:g}: {t['val_loss']:.4f}" for t in search["tried"])
                  + f" | {search['chosen']:g}{at_edge(search)} |" for name, search in searched.items()]
        lines.append("")
    if len(report["budgets"]) > 1:
        lines += [f"## The runs at {report['budget_seconds']:g} s", ""]
    return lines


def at_edge(search: dict) -> str:
    """A warning when the chosen rate is the grid's lowest or highest: the best may lie beyond it."""
    rates = [t["lr"] for t in search["tried"]]
    return " (edge of the grid: widen --lr-search)" if search["chosen"] in (min(rates), max(rates)) else ""


def context_table(report: dict) -> list[str]:
    """How much each model gains from context: val loss near the start of a window vs near its end."""
    lines = ["Context use: val loss at the first positions of a window (little context) and at the last "
             "ones (a full window behind them); a model that uses distant context gains more.", "",
             "| model | positions 0-7 | last 8 positions | gain |", "|---|---|---|---|"]
    for name, r in report["models"].items():
        early, late = r["val_loss_by_position"][:8], r["val_loss_by_position"][-8:]
        early, late = sum(early) / len(early), sum(late) / len(late)
        lines.append(f"| {name} | {early:.4f} | {late:.4f} | {early - late:.4f} |")
    return lines + [""]


def plot_curves(report: dict, out: Path) -> list[Path]:
    """val loss vs wall time, vs tokens seen; tokens/s bars; the experts' load (MoE runs)."""
    models = report["models"]
    paths = []

    def save(fig, name: str) -> None:
        paths.append(save_png(fig, out / name))

    for key, label, name in (("elapsed", "wall time (s)", "val_loss_vs_time.png"),
                             ("tokens", "tokens seen", "val_loss_vs_tokens.png")):
        fig = Figure(figsize=(7, 4), dpi=100, layout="constrained")
        ax = fig.subplots()
        for model, r in models.items():
            ax.plot([p[key] for p in r["curve"]], [p["val_loss"] for p in r["curve"]], "o-", markersize=3,
                    label=f"{model} ({r['active_params']:,} params)")
        ax.set_xlabel(label)
        ax.set_ylabel("val loss (nats / token)")
        ax.set_title(f"val loss vs {label}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        save(fig, name)

    fig = Figure(figsize=(7, 4), dpi=100, layout="constrained")
    ax = fig.subplots()
    for model, r in models.items():
        ax.plot(range(len(r["val_loss_by_position"])), r["val_loss_by_position"], linewidth=1, label=model)
    ax.set_xlabel("position in the context window (tokens of context - 1)")
    ax.set_ylabel("val loss (nats / token)")
    ax.set_title("loss by position: how much each model gains from context")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, "val_loss_by_position.png")

    fig = Figure(figsize=(6, 3.5), dpi=100, layout="constrained")
    ax = fig.subplots()
    names = list(models)
    bars = ax.bar(names, [models[n]["tokens_per_sec"] for n in names], color="tab:blue")
    ax.bar_label(bars, fmt="{:,.0f}", fontsize=8)
    ax.set_ylabel("training tokens / s")
    ax.set_title("training throughput (same batch and context for all)")
    save(fig, "tokens_per_sec.png")

    moe = {n: r for n, r in models.items() if "expert_load" in r}
    if moe:
        fig = Figure(figsize=(7, 4), dpi=100, layout="constrained")
        axes = fig.subplots(1, len(moe), squeeze=False)[0]
        for ax, (name, r) in zip(axes, moe.items()):
            steps = [p["step"] for p in r["expert_load"]]
            for e in range(len(r["expert_load"][0]["load"])):
                ax.plot(steps, [p["load"][e] for p in r["expert_load"]], linewidth=1, label=f"expert {e}")
            ax.plot(steps, [p["dropped"] for p in r["expert_load"]], "k--", linewidth=1, label="dropped (over capacity)")
            ax.set_xlabel("step")
            ax.set_ylabel("share of assignments")
            ax.set_title(f"{name}: expert load (even = {1 / len(r['expert_load'][0]['load']):.3f})")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        save(fig, "expert_load.png")
    if len(report["budgets"]) > 1:
        for fig, name in plot_budgets(report):
            save(fig, name)
    return paths


def plot_budgets(report: dict) -> list[tuple[Figure, str]]:
    """Final val loss against the wall-clock budget, and against parameters x tokens seen.

    Every model has (about) the same parameter count, so val loss against parameters alone would
    stack each family's points on one x. Parameters x tokens seen is what a run spends instead:
    a dense model does about 6 multiply-adds per parameter per token in training (the GPT's
    attention adds a little more), so the x axis is training arithmetic up to that factor. Against
    the budget plot it separates the two reasons a family wins in the same seconds: learning
    more from the same arithmetic (lower here) or doing more arithmetic a second on this hardware
    (further right here, at the same budget)."""
    figures = []
    for x_of, label, name, ticks in (
            (lambda p: p["budget_s"], "wall-clock budget (s)", "val_loss_vs_budget.png", report["budgets"]),
            (lambda p: p["active_params"] * p["tokens_seen"], "active parameters x tokens seen (~ training FLOPs / 6)",
             "val_loss_vs_params.png", None)):
        fig = Figure(figsize=(7, 4), dpi=100, layout="constrained")
        ax = fig.subplots()
        for model, points in report["by_budget"].items():
            ax.plot([x_of(p) for p in points], [p["val_loss"] for p in points], "o-",
                    label=f"{model} ({points[-1]['active_params']:,} params)")
        ax.set_xscale("log")
        if ticks:  # the budgets themselves, not powers of ten
            ax.minorticks_off()
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_xlabel(label)
        ax.set_ylabel("final val loss (nats / token)")
        ax.set_title(f"final val loss vs {label.split(' (')[0]}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        figures.append((fig, name))
    return figures
