"""Calling APIs from their documentation: SmolLM2-135M-Instruct before and after LoRA SFT on
retriever-aware chats (the Gorilla recipe), on APIs it trained on and on ten it never saw.

The pipeline, every step groklm's own (the same functions as the commands):

    make     `groklm apis make --out DIR`: the built-in 62 APIs (10 held out), their pages in a
             RAG index (all-MiniLM-L6-v2 + BM25, hybrid), training chats whose prompts hold the
             pages the retriever found, test requests on seen and held-out APIs
    before   `groklm apis eval DIR --backend local:BASE --conditions none,retrieved,oracle`
    sft      `groklm sft BASE --data DIR/train.jsonl --set lora_rank=16 ...`, timed
    after    the same eval of the tuned run (base + adapters)

Prints one JSON line on stdout (progress on stderr): for each model, split (test: seen APIs, new
calls; heldout: APIs never trained on) and condition (none / retrieved / oracle), the share of
correct calls, wrong arguments, wrong APIs, hallucinated APIs and no call, the retriever's recall,
and seconds per request; the minutes of training and every setting.
    OMP_NUM_THREADS=2 python benchmarks/api_calls.py [--run RUN] [--train 1500] [--n 40] [--iters 240]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from finetune import MODEL, base_and_out  # noqa: E402  (the SmolLM2 run the fine-tuning benchmarks start from)

from groklm.apps.api_calls.build import make_api_data  # noqa: E402
from groklm.apps.api_calls.dataset import Retriever, read_examples  # noqa: E402
from groklm.apps.api_calls.evaluate import CONDITIONS, evaluate_calls  # noqa: E402
from groklm.apps.api_calls.synthetic import synthetic_catalog  # noqa: E402
from groklm.apps.backends import load_backend  # noqa: E402
from groklm.apps.rag.embed import load_embedder  # noqa: E402
from groklm.apps.rag.index import Index  # noqa: E402
from groklm.train.sft import sft  # noqa: E402

SPLITS = ("heldout", "test")


def measure(run: Path, data: Path, catalog, retriever, args) -> dict:
    backend = load_backend(f"local:{run}")
    results = {}
    for split in SPLITS:
        items = read_examples(data / f"{split}.jsonl")[: args.n]
        for condition in CONDITIONS:
            started = time.perf_counter()
            report = evaluate_calls(backend, catalog, items, condition, retriever, args.max_tokens, args.batch_size)
            summary = {k: round(v, 4) if isinstance(v, float) else v for k, v in report.items() if k != "rows"}
            results[f"{split}/{condition}"] = summary
            print(f"  {run.name} {split}/{condition}: correct {summary['correct']:.0%}, hallucinated "
                  f"{summary['hallucinated']:.0%} ({time.perf_counter() - started:.0f}s)", file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help=f"a run directory (default: import {MODEL} into a temporary directory)")
    parser.add_argument("--out", help="where the data and the tuned run go (default: a temporary directory)")
    parser.add_argument("--train", type=int, default=1500, help="training chats")
    parser.add_argument("--n", type=int, default=40, help="test requests per split")
    parser.add_argument("--max-tokens", type=int, default=64, help="longest reply in the evals")
    parser.add_argument("--k", type=int, default=3, help="pages retrieved per request")
    parser.add_argument("--no-docs", type=float, default=0.3, help="share of training chats without pages (1: none has any)")
    parser.add_argument("--skip-before", action="store_true", help="do not measure the base model (an ablation's second run)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=32.0)
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=240, help="SFT optimizer steps")
    parser.add_argument("--lr", type=float, default=1e-3, help="SFT peak learning rate (cosine to a tenth)")
    parser.add_argument("--batch-size", type=int, default=8, help="requests decoded together in the evals")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with base_and_out(args.run, args.out) as (base, out):
        catalog = synthetic_catalog()
        print("make: pages, index, chats ...", file=sys.stderr)
        settings = make_api_data(catalog, out / "apis", load_embedder("default"), train=args.train, test=args.n,
                                 heldout=args.n, k=args.k, no_docs=args.no_docs, force=True)
        retriever = Retriever(Index.open(out / "apis" / "index"), catalog, args.k)
        before = None
        if not args.skip_before:
            print("before: the base model ...", file=sys.stderr)
            before = measure(Path(base), out / "apis", catalog, retriever, args)

        overrides = {"lora_rank": args.rank, "lora_alpha": args.alpha, "lora_targets": "attn,mlp",
                     "block_size": args.block_size, "batch_size": args.batch, "max_iters": args.iters, "lr": args.lr,
                     "min_lr": args.lr / 10, "warmup_iters": 10, "eval_interval": args.iters, "eval_iters": 2}
        print(f"sft: LoRA on {args.train} chats, {args.iters} steps ...", file=sys.stderr)
        started = time.perf_counter()
        tuned = sft(base, str(out / "apis" / "train.jsonl"), out / "tuned", overrides, progress=False)
        minutes = (time.perf_counter() - started) / 60
        print(f"  {minutes:.1f} min", file=sys.stderr)
        print("after: the tuned model ...", file=sys.stderr)
        after = measure(Path(tuned), out / "apis", catalog, retriever, args)

    print(json.dumps({
        "model": args.run or MODEL, "device": "cpu", "threads": args.threads, "data": settings,
        "sft": {"lora": {"rank": args.rank, "alpha": args.alpha, "targets": "attn,mlp"}, "block_size": args.block_size,
                "batch": args.batch, "iters": args.iters, "lr": args.lr, "train_minutes": round(minutes, 2)},
        "eval": {"n": args.n, "decoding": "greedy", "k": args.k, "max_tokens": args.max_tokens},
        "before": before, "after": after,
    }))


if __name__ == "__main__":
    main()
