"""`groklm data prepare`: text in, token shards out. `groklm data synth`: checkable chat tasks out.
`groklm data pairs`: preference pairs from a run's own graded samples."""

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

    from groklm.data.sampled_pairs import add_parser

    add_parser(actions)


def run_prepare(args: argparse.Namespace) -> None:
    from groklm.data.shards import prepare

    meta = prepare(args.sources, args.tokenizer, args.out, args.val_fraction, args.shakespeare_path)
    print(
        f"{args.out}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens "
        f"({meta['dtype']}, vocab {meta['vocab_size']}, {meta['tokenizer']} tokenizer, {meta['documents']} document{'s' if meta['documents'] != 1 else ''})"
    )


def run_synth(args: argparse.Namespace) -> None:
    from functools import partial
    from pathlib import Path

    from groklm.data import synthetic
    from groklm.data.chat_data import write_jsonl
    from groklm.errors import ConfigError

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
