"""`groklm pretrain`: train a GPT from prepared token shards."""

from __future__ import annotations

import argparse
import os


def register(subparsers) -> None:
    from groklm.train.config import PRESETS, add_training_arguments

    parser = subparsers.add_parser(
        "pretrain",
        help="train a GPT from token shards (one process, or many under torchrun)",
        description="Pretrain a GPT on a data directory made by `groklm data prepare`. Any GPTConfig "
        "or TrainConfig field can be set with --set key=value. For data parallelism, launch with "
        "`torchrun --nproc_per_node=N -m groklm pretrain ...`.",
    )
    parser.add_argument("--data", metavar="DIR", help="prepared data directory (optional with --resume)")
    parser.add_argument("--out", required=True, metavar="RUN", help="run directory to write")
    parser.add_argument("--preset", metavar="NAME", help=f"one of: {', '.join(PRESETS)}")
    add_training_arguments(parser, "override a model or training setting, e.g. --set max_iters=500 n_layer=2")
    parser.set_defaults(func=run_pretrain)


def run_pretrain(args: argparse.Namespace) -> None:
    from groklm.train.config import parse_set_args
    from groklm.train.pretrain import pretrain

    overrides = parse_set_args(args.overrides)
    run = pretrain(args.data, args.out, args.preset, overrides, resume=args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", 0)) == 0:
        print_summary(run)


def print_summary(run) -> None:
    from groklm.rundir import METRICS_FILE
    from groklm.train.plots import read_metrics

    records = read_metrics(run / METRICS_FILE)
    if records:
        last = records[-1]
        val = f", val loss {last['val_loss']:.4f}" if "val_loss" in last else ""
        print(f"{run}: step {last['step']}, loss {last['loss']:.4f}{val}, {last['elapsed']:.0f}s")
