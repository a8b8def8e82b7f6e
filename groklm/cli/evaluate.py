"""`groklm eval RUN`: a run's accuracy on the synthetic tasks' test problems (see groklm/eval/harness.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="accuracy of a run on the synthetic tasks (test split)",
        description="Evaluate RUN on test problems of the synthetic tasks. NAME: the model answers "
        "(greedy, or sampled with --temperature) and the task's verifier grades it. NAME:mc: multiple "
        "choice by the log-likelihood of each option. all / all:mc: the default tasks (all but safety).",
    )
    parser.add_argument("run", metavar="RUN", help="run directory to evaluate")
    parser.add_argument("--tasks", default="all", metavar="NAME[,NAME]", help="tasks, e.g. arithmetic,spam:mc (default all)")
    parser.add_argument("--n", type=int, default=100, help="problems per task (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="which test problems (default 0)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="longest generated answer (default 64)")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="0: greedy answers (default); > 0: sample --samples answers per problem and report "
                        "their mean accuracy and expected score")
    parser.add_argument("--samples", type=int, default=4, help="sampled answers per problem when --temperature > 0 (default 4)")
    parser.add_argument("--reference", metavar="RUN", help="with --temperature: also the KL of the sampled answers to this run's model")
    parser.add_argument("--split", choices=("test", "heldout"), default="test",
                        help="test problems in the training wordings, or in wordings no training record uses (default test)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> None:
    from groklm.eval.harness import evaluate_run, format_table

    report = evaluate_run(Path(args.run), args.tasks, args.n, args.seed, args.device, args.max_new_tokens,
                          progress=not args.json and sys.stderr.isatty(), temperature=args.temperature, samples=args.samples,
                          reference=args.reference, split=args.split)
    print(json.dumps(report) if args.json else format_table(report))
