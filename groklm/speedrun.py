"""`groklm speedrun --out DIR`: the whole life of a model in one command, offline, on a CPU.

    tokenizer (BPE on your Python's standard library) -> token shards -> pretrained GPT
    -> samples -> DIR/report.md + DIR/report.json

Every stage writes its own directory under DIR, which every other groklm command can read
(`groklm sample DIR/base`, `groklm attention DIR/base`, `groklm export DIR/base --to hf ...`).
The post-training stages (SFT, reward model, DPO, PPO, evals) join this pipeline as they land.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from groklm.errors import ConfigError

SAMPLE_PROMPTS = ["def ", "import os\n\n", "class Config:\n    "]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "speedrun",
        help="the main job: tokenizer -> data -> pretraining -> samples -> report, offline",
        description="Train a tokenizer and a small GPT on the Python standard library's source "
        "(on every machine, offline) and write a report card.",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="where every stage's directory and the report go")
    parser.add_argument("--preset", default="tiny", help="pretraining preset (default: tiny)")
    parser.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary size (default: 4096)")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override a pretraining setting, e.g. --set max_iters=200")
    parser.add_argument("--force", action="store_true", help="replace the stage directories of an earlier speedrun in DIR")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_speedrun)


def run_speedrun(args: argparse.Namespace) -> None:
    from groklm.train.config import parse_set_args

    overrides = parse_set_args(args.overrides)
    report = speedrun(args.out, args.preset, args.vocab_size, overrides, not args.no_progress, args.force)
    print(f"\nreport: {Path(args.out) / 'report.md'}")
    base = report["stages"]["pretrain"]
    print(f"val loss {base['val_loss']:.3f} (uniform guess {base['uniform_loss']:.3f}) in {report['wall_s']:.0f}s")


def speedrun(
    out_dir: str | Path,
    preset: str = "tiny",
    vocab_size: int = 4096,
    overrides: dict | None = None,
    progress: bool = True,
    force: bool = False,
) -> dict:
    """Run every stage into `out_dir`; returns the report (also written as report.json/.md).

    An earlier speedrun's stage directories in `out_dir` are an error, or replaced with `force`.
    """
    from groklm.data.shards import prepare
    from groklm.data.sources import pystdlib_files
    from groklm.tokenizer import Tokenizer
    from groklm.train.pretrain import pretrain

    if vocab_size < 512:
        raise ConfigError(f"--vocab-size must be at least 512 for a useful BPE, got {vocab_size}")
    out = Path(out_dir)
    _clear_earlier_run(out, force)
    out.mkdir(parents=True, exist_ok=True)
    stages: dict[str, dict] = {}
    started = time.perf_counter()

    _announce("tokenizer")
    clock = time.perf_counter()
    tokenizer = Tokenizer.train(pystdlib_files(), vocab_size, progress=progress)
    tokenizer.save(out / "tokenizer")
    stages["tokenizer"] = {"vocab_size": tokenizer.vocab_size, "dir": str(out / "tokenizer"), "wall_s": _since(clock)}

    _announce("data")
    clock = time.perf_counter()
    meta = prepare(["pystdlib"], str(out / "tokenizer"), out / "data", progress=progress)
    corpus_bytes = sum(f.stat().st_size for f in pystdlib_files())
    stages["data"] = {
        "train_tokens": meta["train_tokens"],
        "val_tokens": meta["val_tokens"],
        "documents": meta["documents"],
        "bytes_per_token": corpus_bytes / (meta["train_tokens"] + meta["val_tokens"]),
        "dir": str(out / "data"),
        "wall_s": _since(clock),
    }

    _announce("pretrain")
    clock = time.perf_counter()
    run = pretrain(out / "data", out / "base", preset=preset, overrides=overrides or {}, progress=progress)
    stages["pretrain"] = {**_pretrain_figures(run, vocab_size), "dir": str(run), "wall_s": _since(clock)}

    _announce("samples")
    samples = _samples(run)
    report = {"stages": stages, "samples": samples, "wall_s": _since(started)}
    _write_report(out, report)
    return report


STAGE_DIRS = ("tokenizer", "data", "base")
REPORT_FILES = ("report.json", "report.md")


def _clear_earlier_run(out: Path, force: bool) -> None:
    """Remove what an earlier speedrun wrote into `out` (only that), if allowed."""
    import shutil

    earlier = [out / name for name in STAGE_DIRS + REPORT_FILES if (out / name).exists()]
    if not earlier:
        return
    if not force:
        raise ConfigError(f"{out} already holds a speedrun ({earlier[0].name}); pass --force to replace it, or pick another --out")
    for path in earlier:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _pretrain_figures(run: Path, vocab_size: int) -> dict:
    from groklm.model import GPT
    from groklm.rundir import METRICS_FILE
    from groklm.train.plots import read_metrics

    records = read_metrics(run / METRICS_FILE)
    vals = [r for r in records if "val_loss" in r]
    speeds = [r["tokens_per_sec"] for r in records if r.get("tokens_per_sec")]
    return {
        "params": GPT.from_run(run).num_params(),
        "steps": records[-1]["step"] if records else 0,
        "uniform_loss": math.log(vocab_size),  # what a model that learned nothing would score
        "first_eval_step": vals[0]["step"] if vals else 0,
        "val_loss_first_eval": vals[0]["val_loss"] if vals else float("nan"),
        "val_loss": vals[-1]["val_loss"] if vals else float("nan"),
        "train_loss": records[-1]["loss"] if records else float("nan"),
        "tokens_per_sec": sorted(speeds)[len(speeds) // 2] if speeds else 0.0,
        "loss_plot": str(run / "loss.png"),
    }


def _samples(run: Path) -> list[dict]:
    import torch

    import groklm

    model, tokenizer = groklm.load(run)
    samples = []
    for seed, prompt in enumerate(SAMPLE_PROMPTS):
        idx = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long)
        ids = model.generate(idx, max_new_tokens=80, temperature=0.8, top_k=50, seed=seed)[0].tolist()
        samples.append({"prompt": prompt, "seed": seed, "completion": tokenizer.decode(ids[idx.size(1):])})
    return samples


def _write_report(out: Path, report: dict) -> None:
    from groklm.rundir import atomic_path, write_json

    write_json(out / "report.json", report)
    s = report["stages"]
    tok, data, base = s["tokenizer"], s["data"], s["pretrain"]
    lines = [
        "# groklm speedrun",
        "",
        f"Total wall time: {report['wall_s']:.0f} s.",
        "",
        "| stage | result | wall time |",
        "| --- | --- | --- |",
        f"| tokenizer | BPE, {tok['vocab_size']} tokens | {tok['wall_s']:.1f} s |",
        f"| data | {data['train_tokens']:,} train / {data['val_tokens']:,} val tokens, "
        f"{data['bytes_per_token']:.2f} bytes/token | {data['wall_s']:.1f} s |",
        f"| pretrain | {base['params']:,} params, {base['steps']} steps, val loss {base['val_loss']:.3f} "
        f"(step {base['first_eval_step']}: {base['val_loss_first_eval']:.3f}; uniform guess: {base['uniform_loss']:.3f}), "
        f"{base['tokens_per_sec']:,.0f} tokens/s | {base['wall_s']:.1f} s |",
        "",
        f"![pretraining loss]({Path(base['loss_plot']).relative_to(out)})",
        "",
        "## Samples from the base model",
        "",
    ]
    for sample in report["samples"]:
        lines += [f"Prompt {json.dumps(sample['prompt'])}, seed {sample['seed']}:", "", "```", sample["prompt"] + sample["completion"], "```", ""]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines))


def _announce(stage: str) -> None:
    print(f"== {stage}", flush=True)


def _since(clock: float) -> float:
    return round(time.perf_counter() - clock, 2)
