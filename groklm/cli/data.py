"""`groklm data prepare`: text in, token shards out. `groklm data synth`: checkable chat tasks out.
`groklm data pairs`: preference pairs from a run's own graded samples."""

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


def run_prepare(args: argparse.Namespace) -> None:
    from groklm.data.shards import prepare

    meta = prepare(args.sources, args.tokenizer, args.out, args.val_fraction, args.shakespeare_path)
    documents = f"{meta['documents']} document{'s' if meta['documents'] != 1 else ''}"
    print(f"{args.out}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens "
          f"({meta['dtype']}, vocab {meta['vocab_size']}, {meta['tokenizer']} tokenizer, {documents})")


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
