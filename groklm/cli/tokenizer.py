"""`groklm tokenizer ...`: train, import, encode, decode, show, stats. No torch: the tokenizer does not need it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from groklm.errors import DataError, TokenizerError

# The corpus names `groklm data prepare` accepts, as groklm.data.sources.NAMED_CORPORA (not
# imported here: the data package loads torch); tests/test_hostile_journeys.py checks that they agree.
NAMED_CORPORA = ("pystdlib", "shakespeare")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "tokenizer",
        help="train, inspect and use a byte-level BPE tokenizer",
        description="Train, import, inspect and use tokenizers (see docs/guide.md, 'Tokenization').",
    )
    actions = parser.add_subparsers(dest="tokenizer_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: parser.print_help())

    p = actions.add_parser("train", help="learn a tokenizer from text files or directories")
    p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="text files, directories (read recursively; files that are not text are skipped and "
                   f"counted), or a named corpus as `groklm data prepare` takes: {', '.join(NAMED_CORPORA)}")
    p.add_argument("--vocab-size", type=int, help="total tokens: 256 bytes + merges + special tokens (bpe)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write tokenizer.json into")
    p.add_argument("--type", choices=["bpe", "char"], default="bpe", help="byte-level BPE (default) or nanoGPT characters")
    p.add_argument("--pattern", default="gpt4", help="pre-split regex: gpt4 (default), gpt2, or a regex")
    p.add_argument("--special", nargs="*", default=[], metavar="TOKEN", help="extra special tokens")
    p.add_argument("--min-frequency", type=int, default=2, help="stop when the best pair occurs fewer times (default 2)")
    p.add_argument("--errors", choices=["strict", "replace"], default="strict",
                   help="non-UTF-8 input: fail on a named file and skip one found in a directory (default), "
                   "or replace the bad bytes with U+FFFD and warn")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--shakespeare-path", metavar="FILE",
                   help="a local Tiny Shakespeare for `--input shakespeare` (else $GROKLM_SHAKESPEARE, the cache, or a download)")
    p.set_defaults(func=run_train)

    p = actions.add_parser("import", help="convert a tiktoken .tiktoken file or a HF tokenizer.json")
    p.add_argument("source", help="a .tiktoken rank file, or a Hugging Face tokenizer.json (or its directory)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--pattern", default="gpt4", help="pre-split regex of a .tiktoken file: gpt4 (cl100k, default), gpt2, or a regex")
    p.set_defaults(func=run_import)

    p = actions.add_parser("encode", help="text -> ids (from the argument, --file, or stdin)")
    _add_tokenizer(p)
    p.add_argument("text", nargs="?", help="text to encode (default: stdin)")
    p.add_argument("--file", help="encode this file instead")
    p.add_argument("--allow-special", action="store_true", help="encode special-token text as the special ids")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=run_encode)

    p = actions.add_parser("decode", help="ids -> text (ids as arguments, or on stdin)")
    _add_tokenizer(p)
    p.add_argument("ids", nargs="*", help="token ids (default: read from stdin, space/comma separated or a JSON list)")
    p.set_defaults(func=run_decode)

    p = actions.add_parser("show", help="show token boundaries in colour, with ids")
    _add_tokenizer(p)
    p.add_argument("text", nargs="?", help="text to show (default: stdin)")
    p.add_argument("--no-color", action="store_true", help="mark boundaries with '|' instead of colours")
    p.add_argument("--allow-special", action="store_true", help="encode special-token text as the special ids")
    p.set_defaults(func=run_show)

    p = actions.add_parser("stats", help="bytes/token and tokens/word per file, for one or two tokenizers")
    p.add_argument("--tokenizer", action="append", required=True, metavar="DIR", help="a tokenizer (give two to compare)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--errors", choices=["strict", "replace"], default="strict")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_stats)


def _add_tokenizer(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer directory (or tokenizer.json / .tiktoken file)")


def _load(location: str):
    from groklm.tokenizer import load_tokenizer

    return load_tokenizer(location)


def _read_text(args) -> str:
    if getattr(args, "file", None):
        from groklm.tokenizer.corpus import read_file_blocks

        return "".join(read_file_blocks(Path(args.file)))
    if args.text is not None:
        return args.text
    return sys.stdin.read()


def training_inputs(specs: list[str], shakespeare_path: str | None = None) -> list:
    """--input values as the trainer reads them: a corpus name through the resolver that
    `groklm data prepare` uses (so both commands take the same names and files), a path as a
    file or a directory."""
    from groklm.tokenizer.corpus import FileGroup

    inputs: list = []
    for spec in specs:
        if spec in NAMED_CORPORA:
            from groklm.data.sources import resolve  # loads torch: only when a corpus is named

            inputs.append(FileGroup(spec, tuple(resolve(spec, shakespeare_path).files)))
        else:
            inputs.append(Path(spec))
    return inputs


def run_train(args) -> None:
    from groklm.tokenizer import CharTokenizer, Tokenizer

    inputs = training_inputs(args.input, args.shakespeare_path)
    if args.type == "char":
        tokenizer = CharTokenizer.train(inputs, special_tokens=args.special, progress=not args.no_progress, errors=args.errors)
    else:
        if args.vocab_size is None:
            raise TokenizerError("--vocab-size is required for a bpe tokenizer (e.g. --vocab-size 8192)")
        tokenizer = Tokenizer.train(
            inputs,
            args.vocab_size,
            pattern=args.pattern,
            special_tokens=args.special,
            min_frequency=args.min_frequency,
            progress=not args.no_progress,
            errors=args.errors,
        )
    path = tokenizer.save(args.out)
    print(f"wrote {path} ({args.type}, vocab size {tokenizer.vocab_size}, special tokens {list(tokenizer.special_tokens)})")


def run_import(args) -> None:
    from groklm.tokenizer.imports import from_hf_file, from_tiktoken_file

    source = Path(args.source)
    if not source.exists():
        raise TokenizerError(f"not found: {source}")
    if source.suffix == ".tiktoken":
        tokenizer = from_tiktoken_file(source, pattern=args.pattern)
    else:
        tokenizer = from_hf_file(source)
    path = tokenizer.save(args.out)
    print(f"wrote {path} (vocab size {tokenizer.vocab_size})")


def run_encode(args) -> None:
    tokenizer = _load(args.tokenizer)
    ids = tokenizer.encode(_read_text(args), allowed_special="all" if args.allow_special else ())
    print(json.dumps(ids) if args.json else " ".join(map(str, ids)))


def run_decode(args) -> None:
    tokenizer = _load(args.tokenizer)
    raw = " ".join(args.ids) if args.ids else sys.stdin.read()
    raw = raw.strip()
    try:
        ids = json.loads(raw) if raw.startswith("[") else [int(x) for x in raw.replace(",", " ").split()]
        if not all(type(i) is int for i in ids):  # (JSON true is not an id)
            raise ValueError
    except ValueError:
        raise TokenizerError("decode expects integer token ids, e.g. `groklm tokenizer decode --tokenizer DIR 15 27 9`") from None
    sys.stdout.write(tokenizer.decode(ids))  # exactly the text: a newline would be a character it lacks


def run_show(args) -> None:
    from groklm.tokenizer.visualize import render_tokens

    tokenizer = _load(args.tokenizer)
    text = _read_text(args)
    ids = tokenizer.encode(text, allowed_special="all" if args.allow_special else ())
    sys.stdout.write(render_tokens(tokenizer, ids, color=not args.no_color))
    n_bytes = len(text.encode("utf-8"))
    ratio = f", {n_bytes / len(ids):.2f} bytes/token" if ids else ""
    print(f"{len(ids)} tokens, {n_bytes} bytes{ratio}")


def run_stats(args) -> None:
    from groklm.tokenizer.corpus import read_file_blocks
    from groklm.tokenizer.visualize import stats_table, text_stats

    tokenizers = [_load(t) for t in args.tokenizer]
    rows = []
    for name in args.files:
        path = Path(name)
        if not path.is_file():
            raise DataError(f"not a file: {path}")
        text = "".join(read_file_blocks(path, args.errors))
        per = [text_stats(t, text) for t in tokenizers]
        rows.append({"file": name, "bytes": per[0]["bytes"], "words": per[0]["words"], "tokenizers": per})
    if args.json:
        print(json.dumps({"tokenizers": args.tokenizer, "files": rows}))
    else:
        sys.stdout.write(stats_table(rows, args.tokenizer))
