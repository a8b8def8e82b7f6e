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
        help="train (BPE, Unigram, characters), inspect and use tokenizers",
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
    p.add_argument("--type", choices=["bpe", "unigram", "char"], default="bpe",
                   help="byte-level BPE (default), a SentencePiece-style Unigram with byte fallback, or nanoGPT characters")
    p.add_argument("--balance", action="store_true",
                   help="weigh every input file the same (as many characters as the longest), so a small language "
                   "gets its share of the vocabulary (bpe, unigram)")
    p.add_argument("--pattern", default=None, help="pre-split regex of a bpe: gpt4 (default), gpt2, or a regex")
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

    p = actions.add_parser("stats", help="what each file costs under one or more tokenizers: tokens per byte and per word")
    p.add_argument("--tokenizer", action="append", required=True, metavar="DIR",
                   help="a tokenizer directory or file, or tiktoken:NAME (e.g. tiktoken:cl100k_base, tiktoken:o200k_base); "
                   "repeat to compare")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--reference", metavar="FILE",
                   help="the file (its path or its name without the extension, e.g. en) that the others' costs are relative to")
    p.add_argument("--plot", metavar="PNG", help="also draw the costs as grouped bars into this PNG")
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
    from groklm.tokenizer.balance import balanced_chunk_counts
    from groklm.tokenizer.bpe import resolve_pattern
    from groklm.tokenizer.unigram import PATTERN, UnigramTokenizer

    inputs = training_inputs(args.input, args.shakespeare_path)
    if args.type == "char":
        if args.balance:
            raise TokenizerError("--balance weighs the counts of a bpe or unigram training; a char tokenizer has none")
        tokenizer = CharTokenizer.train(inputs, special_tokens=args.special, progress=not args.no_progress, errors=args.errors)
    else:
        if args.vocab_size is None:
            raise TokenizerError(f"--vocab-size is required for a {args.type} tokenizer (e.g. --vocab-size 8192)")
        if args.type == "unigram" and args.pattern is not None:
            raise TokenizerError("--pattern sets a bpe's pre-split; a unigram tokenizer splits at spaces (leave it out)")
        pattern = PATTERN if args.type == "unigram" else resolve_pattern(args.pattern or "gpt4")
        counts = balanced_chunk_counts(inputs, pattern, args.special, args.errors) if args.balance else None
        if args.type == "unigram":
            tokenizer = UnigramTokenizer.train(
                inputs, args.vocab_size, special_tokens=args.special, errors=args.errors, chunk_counts=counts
            )
        else:
            tokenizer = Tokenizer.train(
                inputs,
                args.vocab_size,
                pattern=pattern,
                special_tokens=args.special,
                min_frequency=args.min_frequency,
                progress=not args.no_progress,
                errors=args.errors,
                chunk_counts=counts,
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


TIKTOKEN_PREFIX = "tiktoken:"


def stats_encoder(spec: str):
    """The text -> ids function of a `--tokenizer` of `stats`: a groklm tokenizer, or a tiktoken
    encoding by name (its rank file comes from tiktoken's cache, or from the network on first use)."""
    if not spec.startswith(TIKTOKEN_PREFIX):
        return _load(spec).encode
    import tiktoken

    name = spec[len(TIKTOKEN_PREFIX) :]
    if name not in tiktoken.list_encoding_names():
        raise TokenizerError(f"{spec}: tiktoken has no encoding {name!r} (it has {', '.join(tiktoken.list_encoding_names())})")
    try:
        encoding = tiktoken.get_encoding(name)
    except Exception as e:  # tiktoken raises whatever its download raised (requests, OSError, ValueError)
        raise TokenizerError(
            f"{spec} is not available: tiktoken could not read or download its rank file ({type(e).__name__}). "
            "Run once with network access to fill tiktoken's cache (or point TIKTOKEN_CACHE_DIR at a cache "
            "that has it), or import a .tiktoken file with `groklm tokenizer import` and pass its directory"
        ) from None
    return encoding.encode_ordinary  # special-token text is ordinary text here, as in our encoders


def _reference_index(reference: str, files: list[str]) -> int:
    for k, name in enumerate(files):
        if reference in (name, Path(name).stem, Path(name).name):
            return k
    raise DataError(f"--reference {reference}: none of the files is {reference!r} (give one of the files, or its name without extension)")


def run_stats(args) -> None:
    from groklm.rundir import atomic_path
    from groklm.tokenizer.corpus import read_file_blocks
    from groklm.tokenizer.cost_plot import cost_figure
    from groklm.tokenizer.visualize import add_relative_costs, stats_table, text_stats

    encoders = [stats_encoder(t) for t in args.tokenizer]
    reference = _reference_index(args.reference, args.files) if args.reference else None
    rows = []
    for name in args.files:
        path = Path(name)
        if not path.is_file():
            raise DataError(f"not a file: {path}")
        text = "".join(read_file_blocks(path, args.errors))
        per = [text_stats(encode, text) for encode in encoders]
        rows.append({"file": name, "bytes": per[0]["bytes"], "chars": per[0]["chars"], "words": per[0]["words"], "tokenizers": per})
    if reference is not None:
        add_relative_costs(rows, reference)
    if args.plot:
        with atomic_path(Path(args.plot)) as tmp:
            cost_figure(rows, args.tokenizer).savefig(tmp, format="png")
    if args.json:
        print(json.dumps({"tokenizers": args.tokenizer, "reference": args.reference, "files": rows}, ensure_ascii=False))
    else:
        sys.stdout.write(stats_table(rows, args.tokenizer))
