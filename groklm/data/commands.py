"""`groklm data prepare`: text in, token shards out."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="prepare training data (token shards)")
    actions = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    prepare = actions.add_parser(
        "prepare",
        help="encode text into train.bin / val.bin token shards",
        description="Encode SOURCEs into DIR/train.bin, DIR/val.bin, DIR/meta.json and DIR/tokenizer/. "
        "A SOURCE is a file, a directory (every text file under it), `pystdlib` (this Python's "
        "standard library) or `shakespeare` (Tiny Shakespeare, downloaded once and checksummed).",
    )
    prepare.add_argument("sources", nargs="+", metavar="SOURCE")
    prepare.add_argument("--tokenizer", required=True, metavar="DIR|char", help="a tokenizer directory, or `char`")
    prepare.add_argument("--out", required=True, metavar="DIR")
    prepare.add_argument("--val-fraction", type=float, default=0.1, help="tail of the token stream held out (default 0.1)")
    prepare.add_argument("--shakespeare-path", metavar="FILE", help="a local Tiny Shakespeare (else $GROKLM_SHAKESPEARE, the cache, or a download)")
    prepare.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> None:
    from groklm.data.shards import prepare

    meta = prepare(args.sources, args.tokenizer, args.out, args.val_fraction, args.shakespeare_path)
    print(
        f"{args.out}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens "
        f"({meta['dtype']}, vocab {meta['vocab_size']}, {meta['tokenizer']} tokenizer, {meta['documents']} document{'s' if meta['documents'] != 1 else ''})"
    )
