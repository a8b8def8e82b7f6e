"""`groklm data prepare`: text in, token shards out. `groklm data clean`: text in, the text worth
training on out, with a provenance manifest. `groklm data synth`: checkable chat tasks out.
`groklm data pairs`: preference pairs from a run's own graded samples. `groklm data rephrase`: a
model's rewrites of text, for pretraining on real and rephrased text together."""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from groklm.errors import ConfigError


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
    prepare.add_argument("--shakespeare-path", metavar="FILE",
                         help="a local Tiny Shakespeare (else $GROKLM_SHAKESPEARE, the cache, or a download)")
    prepare.add_argument("--clean", action="store_true",
                         help="clean the documents first, as `groklm data clean` does (the rules below, default all)")
    add_cleaning_arguments(prepare)
    prepare.set_defaults(func=run_prepare)

    clean = actions.add_parser(
        "clean",
        help="deduplicate and filter text, with a provenance manifest",
        description="Read SOURCEs (as `data prepare` does; a .jsonl file is one document per record's \"text\") "
        "and write DIR/clean.jsonl (the documents kept), DIR/removed/RULE.jsonl (samples of what each rule "
        "removed) and DIR/manifest.json (every source's origin, sha256, licence and counts). Rules, in order: "
        "boilerplate, words, word_length, symbols, digits, duplicate_lines, repetition, exact_dup, near_dup.",
    )
    clean.add_argument("sources", nargs="+", metavar="SOURCE")
    clean.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder")
    clean.add_argument("--shakespeare-path", metavar="FILE",
                       help="a local Tiny Shakespeare (else $GROKLM_SHAKESPEARE, the cache, or a download)")
    add_cleaning_arguments(clean)
    clean.set_defaults(func=run_clean)

    synth = actions.add_parser(
        "synth",
        help="write synthetic chat tasks (SFT, preferences, RL prompts, multiple choice) as JSONL",
        description="Write sft_{train,test}.jsonl, prefs_{train,test}.jsonl, rl_{train,test}.jsonl and "
        "mc_test.jsonl into DIR: tasks whose answers a program can check, in the formats "
        "`load_sft_jsonl` / `load_preferences_jsonl` read. Test problems never appear in train.",
    )
    synth.add_argument("--out", required=True, metavar="DIR")
    synth.add_argument("--tasks", default="all", help="comma-separated task names, or `all` (default)")
    synth.add_argument("--n", type=int, default=1000, help="train records per task and file (test: a fifth of that, at least 1)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--chatty", type=float, default=0.0, metavar="SHARE",
                       help="share of SFT demonstrations answered in a wordier style than the task asks for (default 0)")
    synth.set_defaults(func=run_synth)

    pairs = actions.add_parser(
        "pairs",
        help="preference pairs from a run's own sampled replies, graded by the task verifiers",
        description="Sample --samples replies from RUN to each of --n train prompts per task, grade them with "
        "the synthetic tasks' verifiers, and write {prompt, chosen, rejected} JSONL: chosen is one of the "
        "model's correct replies (or the reference answer), rejected one of its wrong ones.",
    )
    pairs.add_argument("run", metavar="RUN", help="the run to sample from (usually an SFT run)")
    pairs.add_argument("--out", required=True, metavar="FILE", help="JSONL file to write")
    pairs.add_argument("--tasks", default="all", help="comma-separated task names, or `all` (default)")
    pairs.add_argument("--n", type=int, default=200, help="train prompts per task (default 200)")
    pairs.add_argument("--samples", type=int, default=4, help="replies sampled per prompt (default 4)")
    pairs.add_argument("--temperature", type=float, default=1.0)
    pairs.add_argument("--seed", type=int, default=1, help="which train problems (default 1; SFT's synthetic data is seed 0)")
    pairs.add_argument("--device", default="cpu")
    pairs.set_defaults(func=run_pairs)

    rephrase = actions.add_parser(
        "rephrase",
        help="rewrite text with a model (Wikipedia style, or questions and answers) for pretraining",
        description="Cut SOURCEs (read as `data prepare` reads them) into chunks of about --chunk-words words, ask "
        "--backend to rewrite each in --style (greedy), and append one record per chunk to FILE: "
        '{"source", "chunk", "hash", "style", "backend", "original", "text", "dropped"}; "text" is the '
        "rephrasing (empty for a dropped reply), so `groklm data prepare FILE` trains on it. A rerun skips "
        "chunks already in FILE. A local backend decodes --batch chunks together, an openai backend has --batch "
        "requests in flight at once; hf asks one by one.",
    )
    rephrase.add_argument("sources", nargs="+", metavar="SOURCE")
    rephrase.add_argument("--backend", required=True, metavar="SPEC", help="local:RUN, hf:DIR or openai:URL#MODEL")
    rephrase.add_argument("--style", required=True, choices=("wiki", "qa"))
    rephrase.add_argument("--out", required=True, metavar="FILE", help="JSONL file to append to")
    rephrase.add_argument("--chunk-words", type=int, default=200, help="words per chunk, about (default 200)")
    rephrase.add_argument("--max-chunks", type=int, metavar="N", help="only the first N chunks of the sources")
    rephrase.add_argument("--batch", type=int, default=8, help="chunks per batch (default 8)")
    rephrase.add_argument("--max-tokens", type=int, default=512, help="tokens per reply at most (default 512)")
    rephrase.add_argument("--shakespeare-path", metavar="FILE",
                          help="a local Tiny Shakespeare (else $GROKLM_SHAKESPEARE, the cache, or a download)")
    rephrase.add_argument("--device", default="cpu", help="for local and hf backends")
    rephrase.set_defaults(func=run_rephrase)


def add_cleaning_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rules", metavar="A,B", help="only these cleaning rules (default: all)")
    parser.add_argument("--no-rule", action="append", default=[], metavar="NAME", help="switch a rule off (repeatable)")
    parser.add_argument("--near-dup-threshold", type=float, default=None, metavar="J",
                        help="Jaccard similarity of word 5-grams at which a document is a near duplicate, in (0, 1] (default 0.8)")
    parser.add_argument("--samples", type=int, default=None, metavar="N", help="removed documents kept per rule in removed/ (default 20)")
    parser.add_argument("--split-paragraphs", action="store_true",
                        help="one document per blank-line-separated paragraph of a plain text file (default: one per file)")
    parser.add_argument("--license", action="append", default=[], metavar="[SOURCE=]LICENCE",
                        help="the licence of one SOURCE, or of all (an SPDX id or free text; repeatable); missing: \"unknown\"")


def cleaning_config(args: argparse.Namespace):
    from groklm.data.clean import DEFAULT_NEAR_DUP_THRESHOLD, DEFAULT_SAMPLES, CleanConfig, select_rules

    threshold = DEFAULT_NEAR_DUP_THRESHOLD if args.near_dup_threshold is None else args.near_dup_threshold
    samples = DEFAULT_SAMPLES if args.samples is None else args.samples
    return CleanConfig(select_rules(args.rules, args.no_rule), threshold, samples)


def print_cleaning(manifest: dict) -> None:
    totals = manifest["totals"]
    print(f"kept {totals['documents_out']:,} of {totals['documents_in']:,} documents "
          f"({totals['bytes_out']:,} of {totals['bytes_in']:,} bytes)")
    for rule, counts in totals["removed"].items():
        lines = f", {counts['lines']:,} lines" if "lines" in counts else ""
        print(f"  {rule:<16} removed {counts['documents']:,} documents{lines}, {counts['bytes']:,} bytes")


def run_prepare(args: argparse.Namespace) -> None:
    from groklm.data.manifest import MANIFEST_FILE
    from groklm.data.prepare import prepare
    from groklm.rundir import read_json

    cleaning_flags = [flag for flag, value in (("--rules", args.rules), ("--no-rule", args.no_rule),
                      ("--near-dup-threshold", args.near_dup_threshold), ("--samples", args.samples)) if value not in (None, [])]
    if cleaning_flags and not args.clean:
        raise ConfigError(f"{', '.join(cleaning_flags)}: cleaning settings, and cleaning is off: add --clean")
    cleaning = cleaning_config(args) if args.clean else None
    meta = prepare(args.sources, args.tokenizer, args.out, args.val_fraction, args.shakespeare_path,
                   cleaning=cleaning, licenses=args.license, split_paragraphs=args.split_paragraphs)
    documents = f"{meta['documents']} document{'s' if meta['documents'] != 1 else ''}"
    print(f"{args.out}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens "
          f"({meta['dtype']}, vocab {meta['vocab_size']}, {meta['tokenizer']} tokenizer, {documents})")
    if cleaning is not None:
        print_cleaning(read_json(Path(args.out) / MANIFEST_FILE))


def run_clean(args: argparse.Namespace) -> None:
    from groklm.data.clean import clean_corpus

    manifest = clean_corpus(args.sources, args.out, cleaning_config(args), args.license, args.split_paragraphs,
                            args.shakespeare_path)
    print_cleaning(manifest)
    print(f"{args.out}: clean.jsonl, manifest.json, removed/")


def run_synth(args: argparse.Namespace) -> None:
    from groklm import tasks as synthetic
    from groklm.jsonl import write_jsonl

    if args.n < 1:
        raise ConfigError(f"--n must be at least 1, got {args.n}")
    tasks = None if args.tasks == "all" else [t.strip() for t in args.tasks.split(",") if t.strip()]
    synthetic.get_tasks(tasks)  # a typo fails before any file is written
    sizes = {"train": args.n, "test": max(1, args.n // 5)}
    makers = {"sft": partial(synthetic.make_sft, chatty=args.chatty), "prefs": synthetic.make_preferences,
              "rl": synthetic.make_rl_prompts}
    out = Path(args.out)
    for kind, make in makers.items():
        for split, n in sizes.items():
            count = write_jsonl(out / f"{kind}_{split}.jsonl", make(tasks, n, split, args.seed))
            print(f"{out / f'{kind}_{split}.jsonl'}: {count:,} records")
    count = write_jsonl(out / "mc_test.jsonl", synthetic.make_choices(tasks, sizes["test"], "test", args.seed))
    print(f"{out / 'mc_test.jsonl'}: {count:,} records")


def run_pairs(args: argparse.Namespace) -> None:
    from groklm.data.sampled_pairs import sample_pairs
    from groklm.jsonl import write_jsonl
    from groklm.runs import load

    tasks = None if args.tasks == "all" else [t.strip() for t in args.tasks.split(",") if t.strip()]
    model, tokenizer = load(args.run, device=args.device)
    pairs, stats = sample_pairs(model, tokenizer, tasks, args.n, args.samples, args.temperature, seed=args.seed, progress=True)
    count = write_jsonl(Path(args.out), pairs)
    for name, s in stats.items():
        print(f"{name:<12} sampled accuracy {s['sample_accuracy']:6.1%}  pairs {s['pairs']}")
    print(f"{args.out}: {count:,} pairs")


def run_rephrase(args: argparse.Namespace) -> None:
    from groklm.apps.backends import load_backend
    from groklm.apps.rephrase import read_chunks, rephrase

    if args.batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {args.batch}")
    chunks = read_chunks(args.sources, args.chunk_words, args.max_chunks, args.shakespeare_path)
    kind = args.backend.partition(":")[0]
    options = {"local": {"device": args.device, "max_batch": args.batch}, "hf": {"device": args.device}}.get(kind, {})
    stats = rephrase(load_backend(args.backend, **options), chunks, args.style, args.out, args.batch, args.max_tokens)
    dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(stats.dropped.items())) or "none"
    rate = f", {stats.asked / stats.seconds:.2f} chunks/s" if stats.seconds else ""
    print(f"{args.out}: {stats.kept} kept, dropped {dropped}, {stats.done_before} done before "
          f"(of {stats.chunks} chunks){rate}")
