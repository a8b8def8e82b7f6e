"""Muon against AdamW at equal wall time: the val loss each optimizer reaches in the same seconds.

Two recipes (--mode):
  shakespeare  the `shakespeare-char` preset (4 layers, 128 wide, 64 characters of context) on
               Tiny Shakespeare, characters; text from ../shared/data/tinyshakespeare.txt beside
               the repo, $GROKLM_SHAKESPEARE or the groklm cache (never downloaded)
  speedrun     the speedrun's pretraining: the `tiny` preset (4 layers, 128 wide, 128 tokens of
               context) on the Python standard library, with a 4096-token BPE fitted to it

Each optimizer gets the same --budget-s seconds. The training loop runs to a step count, not a
clock, so each one's speed is measured first (groklm compare's timing: a few steps each, taking
turns) and its run gets as many steps as the budget holds, with the preset's cosine schedule
stretched over them (lr_decay_iters = max_iters): a schedule cut short would handicap the run
with more steps. AdamW runs with the preset's settings; Muon with the preset's AdamW settings for
embeddings, norms and the head, and each Muon peak rate of --muon-lrs for the hidden matrices.
Runs go one after another in this process with the same torch threads, the order reversed on
every other repeat. Each final model is scored on the same fixed val windows (every run's own
val_loss, 20 random batches, is reported too), and since a busy machine moves real times off the
plan, each val-loss curve is also read at the shortest run's wall time.

Prints one JSON line (progress on stderr): `adamw_val` and `muon_val` (Muon at its best rate),
the fixed-window val losses averaged over repeats, and per run its steps, wall time and losses:
    python benchmarks/muon.py [--mode shakespeare|speedrun] [--budget-s 60 | --adamw-steps N]
        [--muon-lrs 0.02,0.05] [--repeats 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from groklm.data.prepare import prepare  # noqa: E402
from groklm.data.shards import TokenShards  # noqa: E402
from groklm.data.sources import pystdlib_files, shakespeare_file  # noqa: E402
from groklm.experiments.compare import loss_at, loss_by_position, seconds_per_step  # noqa: E402
from groklm.model.arch import load_model  # noqa: E402
from groklm.tokenizer import Tokenizer  # noqa: E402
from groklm.train.config import preset  # noqa: E402
from groklm.train.plots import read_metrics  # noqa: E402
from groklm.train.pretrain import VOCAB_MULTIPLE, pretrain  # noqa: E402

PRESETS = {"shakespeare": "shakespeare-char", "speedrun": "tiny"}
SPEEDRUN_VOCAB = 4096  # the speedrun's default --vocab-size


def prepare_data(mode: str, folder: Path, shakespeare_path: str | None) -> Path:
    """The recipe's token shards in folder/data."""
    data = folder / "data"
    if mode == "shakespeare":
        shared = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
        text = shakespeare_file(shakespeare_path or (shared if shared.is_file() else None), download=False)
        prepare(["shakespeare"], "char", data, shakespeare_path=text, progress=False)
    else:
        Tokenizer.train(pystdlib_files(), SPEEDRUN_VOCAB).save(folder / "tokenizer")
        prepare(["pystdlib"], str(folder / "tokenizer"), data, progress=False)
    return data


def optimizer_settings(muon_lrs: list[float]) -> dict[str, dict]:
    """{name: TrainConfig overrides} of each contender."""
    return {"adamw": {"optimizer": "adamw"}, **{f"muon@{lr:g}": {"optimizer": "muon", "muon_lr": lr} for lr in muon_lrs}}


def planned_steps(mode: str, data: Path, contenders: dict[str, dict], budget_s: float,
                  adamw_steps: int | None) -> tuple[dict, dict]:
    """({name: steps that fill budget_s}, {name: seconds a step}) at the preset's shape and batch.
    adamw_steps: the budget is the time AdamW takes for that many steps instead."""
    model_values, train_values = preset(PRESETS[mode])
    shards = TokenShards(data)
    vocab = -(-shards.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE  # as pretraining pads it
    plans = {name: ("gpt", {**model_values, "vocab_size": vocab}, {**train_values, **settings, "device": "cpu"})
             for name, settings in contenders.items()}
    seconds = seconds_per_step(plans, shards)
    warmup = train_values["warmup_iters"]
    if adamw_steps:
        budget_s = adamw_steps * seconds["adamw"]
    return {name: max(warmup + 1, round(budget_s / s)) for name, s in seconds.items()}, seconds


def train_one(mode: str, data: Path, run: Path, settings: dict, steps: int) -> dict:
    """Pretrain one contender for `steps` steps; its wall time, losses and val-loss curve."""
    start = time.perf_counter()
    pretrain(data, run, preset=PRESETS[mode], progress=False,
             overrides={**settings, "max_iters": steps, "lr_decay_iters": steps, "device": "cpu"})
    wall = time.perf_counter() - start
    records = read_metrics(run / "metrics.jsonl")
    model = load_model(run)
    fixed = statistics.fmean(loss_by_position(model, TokenShards(data).val, model.config.block_size))
    return {"steps": steps, "wall_s": wall, "train_loss": records[-1]["loss"], "val_loss": records[-1]["val_loss"],
            "val_loss_fixed": fixed, "curve": [{"elapsed": r["elapsed"], "val_loss": r["val_loss"]}
                                               for r in records if "val_loss" in r]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=tuple(PRESETS), default="shakespeare")
    parser.add_argument("--budget-s", type=float, default=60.0, help="training seconds per run (default 60)")
    parser.add_argument("--adamw-steps", type=int, help="budget: the time AdamW takes for this many steps "
                        "(the recipe's length on a machine whose speed drifts), instead of --budget-s")
    parser.add_argument("--muon-lrs", default="0.02,0.05", help="Muon peak rates to try, comma-separated")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of every run, alternating the order")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for every run (default 1)")
    parser.add_argument("--path", help="Tiny Shakespeare file (default: ../shared/data, $GROKLM_SHAKESPEARE, the cache)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    contenders = optimizer_settings([float(lr) for lr in args.muon_lrs.split(",")])

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = prepare_data(args.mode, folder, args.path)
        steps, seconds = planned_steps(args.mode, data, contenders, args.budget_s, args.adamw_steps)
        print(f"seconds a step: {json.dumps({k: round(v, 4) for k, v in seconds.items()})}; steps: {steps}",
              file=sys.stderr, flush=True)
        runs: dict[str, list[dict]] = {name: [] for name in contenders}
        for repeat in range(args.repeats):
            order = list(contenders) if repeat % 2 == 0 else list(reversed(contenders))
            for name in order:
                result = train_one(args.mode, data, folder / f"{name}-{repeat}", contenders[name], steps[name])
                runs[name].append(result)
                print(f"{name} round {repeat}: {result['steps']} steps in {result['wall_s']:.1f}s, "
                      f"val {result['val_loss_fixed']:.4f}", file=sys.stderr, flush=True)

    equal_time = min(r["wall_s"] for results in runs.values() for r in results)
    summary = {}
    for name, results in runs.items():
        summary[name] = {
            "steps": results[0]["steps"],
            "ms_per_step_planned": round(1000 * seconds[name], 2),
            "wall_s": [round(r["wall_s"], 1) for r in results],
            "val_loss_fixed": round(statistics.fmean(r["val_loss_fixed"] for r in results), 4),
            "val_loss_run": round(statistics.fmean(r["val_loss"] for r in results), 4),
            "val_loss_at_equal_time": round(statistics.fmean(loss_at(r["curve"], "elapsed", equal_time) for r in results), 4),
            "train_loss": round(statistics.fmean(r["train_loss"] for r in results), 4),
        }
    best_muon = min((name for name in summary if name != "adamw"), key=lambda name: summary[name]["val_loss_fixed"])
    adamw_val, muon_val = summary["adamw"]["val_loss_fixed"], summary[best_muon]["val_loss_fixed"]
    print(json.dumps({
        "benchmark": "muon",
        "mode": args.mode,
        "preset": PRESETS[args.mode],
        "budget_s": round(steps["adamw"] * seconds["adamw"], 1) if args.adamw_steps else args.budget_s,
        "adamw_val": adamw_val,
        "muon_val": muon_val,
        "best_muon": best_muon,
        "muon_minus_adamw": round(muon_val - adamw_val, 4),
        "muon_wins": muon_val < adamw_val,
        "adamw_wall_s": summary["adamw"]["wall_s"],
        "muon_wall_s": summary[best_muon]["wall_s"],
        "adamw_steps": summary["adamw"]["steps"],
        "muon_steps": summary[best_muon]["steps"],
        "equal_time_s": round(equal_time, 1),
        "runs": summary,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
