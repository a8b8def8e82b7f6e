"""`groklm apis`: teach a model to call APIs from their documentation, and measure it.

    groklm apis make --out apis                       # catalog, pages, index, train/test/heldout data
    groklm sft runs/smol --data apis/train.jsonl --out runs/smol-apis --set lora_rank=16 ...
    groklm apis eval apis --backend local:runs/smol-apis --conditions none,retrieved,oracle
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from groklm.cli.apps import split_list
from groklm.errors import ConfigError, DataError

# As groklm.apps.api_calls.evaluate.CONDITIONS and dataset.SPLITS (not imported: torch);
# tests/test_cli_light.py checks that they agree.
CONDITIONS = ("none", "retrieved", "oracle")
EVAL_SPLITS = ("test", "heldout")


def register(subparsers) -> None:
    apis = subparsers.add_parser("apis", help="calling APIs from their documentation: make the data, measure the calls")
    actions = apis.add_subparsers(dest="apis_command", metavar="ACTION", required=True)

    make = actions.add_parser(
        "make", help="write an API catalog, its documentation index, and training and test data",
        description="From the built-in synthetic API set (or --catalog FILE), write DIR/apis.json, one documentation "
        "page per API (DIR/docs), a RAG index of them (DIR/index), SFT chats whose prompts hold the pages the "
        "retriever found (DIR/train.jsonl), and test requests for seen and held-out APIs.")
    make.add_argument("--out", required=True, type=Path, metavar="DIR")
    make.add_argument("--catalog", type=Path, metavar="FILE", help="your own catalog (the format of DIR/apis.json)")
    make.add_argument("--train", type=int, default=2000, help="training chats (default 2000)")
    make.add_argument("--test", type=int, default=100, help="test requests on seen APIs (default 100)")
    make.add_argument("--heldout", type=int, default=100, help="requests on held-out APIs (default 100)")
    make.add_argument("--k", type=int, default=3, help="documentation pages retrieved per request (default 3)")
    make.add_argument("--no-docs", type=float, default=0.3, metavar="SHARE",
                      help="share of training chats without any pages (default 0.3)")
    make.add_argument("--embedder", default="default", metavar="SPEC", help="the index's embedder (default all-MiniLM-L6-v2)")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--force", action="store_true", help="replace a non-empty DIR")
    make.set_defaults(func=run_make)

    evaluate = actions.add_parser(
        "eval", help="call accuracy and hallucinated APIs, with and without retrieved documentation",
        description="Send each test request of DIR to BACKEND under each condition (none: no documentation; "
        "retrieved: the index's top k pages; oracle: the right page alone) and grade its first CALL line.")
    evaluate.add_argument("data", type=Path, metavar="DIR", help="a `groklm apis make` directory")
    evaluate.add_argument("--backend", required=True, metavar="SPEC", help="local:RUN_DIR, hf:DIR or openai:BASE_URL#MODEL")
    evaluate.add_argument("--splits", default="heldout,test", help=f"from {', '.join(EVAL_SPLITS)} (default heldout,test)")
    evaluate.add_argument("--conditions", default="none,retrieved", help=f"from {', '.join(CONDITIONS)} (default none,retrieved)")
    evaluate.add_argument("--n", type=int, default=None, help="first N requests of each split (default all)")
    evaluate.add_argument("--k", type=int, default=None, help="pages retrieved (default: the k DIR was made with)")
    evaluate.add_argument("--max-tokens", type=int, default=64, help="longest reply in tokens (default 64: a call is shorter)")
    evaluate.add_argument("--batch-size", type=int, default=8, help="requests decoded together (default 8)")
    evaluate.add_argument("--out", type=Path, metavar="FILE.json", help="also write the report with every reply")
    evaluate.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    evaluate.set_defaults(func=run_eval)


def comma_list(value: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    items = split_list([value])
    if not items or any(v not in allowed for v in items):
        raise ConfigError(f"{flag} takes a comma-separated list from {', '.join(allowed)}; got {value!r}")
    return items


def run_make(args: argparse.Namespace) -> None:
    from groklm.apps.api_calls.build import make_api_data
    from groklm.apps.api_calls.catalog import load_catalog
    from groklm.apps.api_calls.synthetic import synthetic_catalog
    from groklm.apps.rag.embed import load_embedder

    catalog = load_catalog(args.catalog) if args.catalog else synthetic_catalog()
    print(f"{len(catalog.apis)} APIs, {len(catalog.held_out)} held out; indexing their pages...", file=sys.stderr)
    settings = make_api_data(catalog, args.out, load_embedder(args.embedder), args.train, args.test, args.heldout,
                             args.k, args.no_docs, args.seed, args.force, progress=True)
    chats = settings["chats"]
    print(f"{args.out}: {settings['train']} training chats ({chats['with_docs']} with pages, {chats['without_docs']} "
          f"without, {chats['abstain']} abstaining because the retriever missed), {settings['test']} test and "
          f"{settings['heldout']} held-out requests")


def run_eval(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from groklm.apps.api_calls.build import read_settings
    from groklm.apps.api_calls.catalog import load_catalog
    from groklm.apps.api_calls.dataset import Retriever, read_examples
    from groklm.apps.api_calls.evaluate import evaluate_calls
    from groklm.apps.backends import load_backend
    from groklm.apps.rag.index import Index
    from groklm.rundir import write_json

    splits = comma_list(args.splits, EVAL_SPLITS, "--splits")
    conditions = comma_list(args.conditions, CONDITIONS, "--conditions")
    if args.n is not None and args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    settings = read_settings(args.data)
    if "heldout" in splits and not settings["heldout"]:
        raise DataError(f"{args.data} has no heldout split: its catalog holds no API out (use --splits test)")
    catalog = load_catalog(args.data / "apis.json")
    retriever = Retriever(Index.open(args.data / "index"), catalog, args.k or settings["k"]) if "retrieved" in conditions else None
    backend = load_backend(args.backend)
    report = {"backend": backend.name, "k": args.k or settings["k"], "results": []}
    for split in splits:
        items = read_examples(args.data / f"{split}.jsonl")[: args.n]
        for condition in conditions:
            with tqdm(total=len(items), desc=f"{split} / {condition}", unit="request", file=sys.stderr) as bar:
                result = evaluate_calls(backend, catalog, items, condition, retriever, args.max_tokens, args.batch_size,
                                        progress=bar.update)
            report["results"].append({"split": split, **result})
    summary = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k != "rows"} for r in report["results"]]
    if args.out:
        write_json(args.out, report)
    if args.json:
        print(json.dumps({"backend": report["backend"], "k": report["k"], "results": summary}))
        return
    print(f"{backend.name}, {report['k']} pages retrieved")
    print("| split | documentation | n | correct | wrong arguments | wrong API | hallucinated | no call | recall | s/request |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in summary:
        recall = f"{r['recall']:.0%}" if "recall" in r else ""
        print(f"| {r['split']} | {r['condition']} | {r['n']} | {r['correct']:.0%} | {r['wrong_arguments']:.0%} | "
              f"{r['wrong_api']:.0%} | {r['hallucinated']:.0%} | {r['no_call']:.0%} | {recall} | {r['seconds_per_request']:.2f} |")
