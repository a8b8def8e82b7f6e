"""The single `groklm` entry point: one subcommand per stage of a model's life.

Each stage owns a `commands.py` with `register(subparsers)`, which adds its subcommands and
sets `func` on each parser. Heavy imports (torch, tiktoken) happen inside the handlers, so
`groklm --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from groklm.errors import GroklmError

# The order here is the order of a model's life, and the order `groklm --help` lists them.
COMMAND_MODULES = [
    "groklm.tokenizer.commands",
    "groklm.data.commands",
    "groklm.train.commands",
    "groklm.train.sft",
    "groklm.train.reward",
    "groklm.train.dpo",
    "groklm.train.ppo",
    "groklm.eval.harness",
    "groklm.infer.chat",
    "groklm.serve.commands",
    "groklm.model.commands",
    "groklm.interop.commands",
    "groklm.apps.rag.commands",
    "groklm.apps.commands",
    "groklm.apps.distill",
    "groklm.experiments.speedrun",
    "groklm.experiments.compare",
    "groklm.train.seq2seq",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="groklm",
        description="Train, align, serve and use a language model you own.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        sys.exit(2)
    try:
        args.func(args)
    except GroklmError as error:
        print(f"groklm: error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("groklm: interrupted", file=sys.stderr)
        sys.exit(130)
