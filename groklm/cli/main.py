"""The single `groklm` entry point: one subcommand per stage of a model's life.

Each command family is a module here with `register(subparsers)`, which adds its subcommands
and sets `func` on each parser. The handlers import what they run (torch, the model, the
server), so building the parser, `groklm --help` and `groklm tokenizer ...` never load torch.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from groklm.cli import apis, apps, chat, data, evaluate, experiments, interop, model, rag, serve, tokenizer, train
from groklm.errors import GroklmError

# The order of a model's life, and the order `groklm --help` lists the commands in.
FAMILIES = (tokenizer, data, train, evaluate, chat, serve, model, interop, rag, apps, apis, experiments)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="groklm",
        description="Train, align, serve and use a language model you own.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for family in FAMILIES:
        family.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        sys.exit(2)
    format_warning = warnings.formatwarning
    warnings.formatwarning = warning_line
    try:
        args.func(args)
    except GroklmError as error:
        print(f"groklm: error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("groklm: interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        warnings.formatwarning = format_warning  # main() may be called in-process (tests, notebooks)


def warning_line(message, category, filename, lineno, line=None) -> str:
    """How the CLI shows a warning: `warning: message`, one line. The file and line of the
    warnings.warn call (Python's default) are for the person who wrote it, not for the user."""
    return "warning: " + " ".join(str(message).split("\n")) + "\n"
