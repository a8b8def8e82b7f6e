"""Synthetic rephrasing: how fast a small local model rephrases, what it writes, and whether
pretraining on real + rephrased text beats real text alone at the same token budget.

1. Rephrasing. The first --chunks chunks (--chunk-words words) of Tiny Shakespeare, in the
   wiki style, by a local run (default SmolLM2-135M-Instruct: `groklm import
   smollm2-135m-instruct --out /tmp/smol`), --batch chunks per engine batch, greedy, at most
   --max-tokens tokens a reply. chunks/s counts every chunk asked (kept or dropped) over the
   time spent in the backend. The output file is kept (--out), so a rerun only pretrains.

2. Experiment, data-constrained as in the paper's small-data setting: "real" is the text of the
   rephrased chunks only; "real+rephrased" adds the kept rephrasings. A tiny character GPT is
   pretrained on each, the same steps and batch (the same token budget: several epochs of the
   real text), one character vocabulary for both; both are scored on the last 10% of Tiny
   Shakespeare (never rephrased, never trained on), mean loss over every block; --seeds
   seeds each.

Prints one JSON line on stdout (progress on stderr):
    OMP_NUM_THREADS=1 nice python benchmarks/rephrase.py [--run /tmp/smol] [--chunks 96] [--iters 600] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from data_clean import heldout_loss, shakespeare_text  # noqa: E402  (the held-out scoring the cleaning benchmark uses)


def rephrase_corpus(args, source: Path) -> tuple[dict, list[dict]]:
    from groklm.apps.backends import LocalBackend
    from groklm.apps.rephrase import read_chunks, rephrase
    from groklm.jsonl import read_jsonl

    backend = LocalBackend(args.run, max_batch=args.batch)
    chunks = read_chunks([str(source)], args.chunk_words, args.chunks)
    stats = rephrase(backend, chunks, "wiki", args.out, args.batch, args.max_tokens, progress=True)
    hashes = {chunk.hash for chunk in chunks}
    records = [r for r in read_jsonl(args.out) if r["hash"] in hashes and r["style"] == "wiki" and r["backend"] == backend.name]
    return stats.to_dict(), records


def experiment(records: list[dict], heldout: str, folder: Path, iters: int, seeds: int) -> dict:
    from groklm.data.prepare import prepare
    from groklm.tokenizer.char import CharTokenizer
    from groklm.train.pretrain import pretrain

    real = folder / "real.txt"
    real.write_text("\n\n".join(r["original"] for r in records))
    kept = folder / "rephrased.jsonl"
    kept.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in records if r["text"]))
    vocabulary = folder / "chars"
    CharTokenizer.train(shakespeare_text() + "".join(r["text"] for r in records)).save(vocabulary)
    settings = {"n_layer": 2, "n_head": 4, "n_embd": 96, "block_size": 64, "batch_size": 16, "max_iters": iters,
                "eval_interval": iters, "eval_iters": 5, "log_interval": 100, "warmup_iters": 50, "lr": 3e-3,
                "dropout": 0.0, "device": "cpu"}
    result = {"tokens_seen": iters * 16 * 64}
    for name, sources in (("real", [real]), ("real+rephrased", [real, kept])):
        data = folder / f"data-{name}"
        meta = prepare([str(s) for s in sources], str(vocabulary), data, val_fraction=0.05, progress=False,
                       licenses=["public-domain"])
        losses = []
        start = time.perf_counter()
        for seed in range(seeds):
            run = pretrain(data, folder / f"run-{name}-{seed}", overrides={**settings, "seed": seed}, progress=False)
            losses.append(round(heldout_loss(run, heldout), 4))
        result[name] = {"documents": meta["documents"], "train_tokens": meta["train_tokens"],
                        "heldout_loss": losses, "mean_heldout_loss": round(sum(losses) / len(losses), 4),
                        "train_seconds": round(time.perf_counter() - start, 1)}
        print(f"{name}: {result[name]}", file=sys.stderr, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="/tmp/smol", help="the local run that rephrases (default /tmp/smol)")
    parser.add_argument("--chunks", type=int, default=96)
    parser.add_argument("--chunk-words", type=int, default=80)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--iters", type=int, default=600, help="pretraining steps of each model (default 600)")
    parser.add_argument("--seeds", type=int, default=3, help="pretraining seeds per side (default 3)")
    parser.add_argument("--out", default="/tmp/rephrase-bench.jsonl", help="the rephrasings (kept between runs)")
    parser.add_argument("--examples", type=int, default=3, help="kept rephrasings printed in the result")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    text = shakespeare_text()
    cut = int(0.9 * len(text))
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "shakespeare-train.txt"
        source.write_text(text[:cut])
        stats, records = rephrase_corpus(args, source)
        result = {"benchmark": "rephrase", "run": args.run, "chunk_words": args.chunk_words, "batch": args.batch,
                  "max_tokens": args.max_tokens, "rephrase": stats,
                  "examples": [{"original": r["original"], "text": r["text"]} for r in records if r["text"]][: args.examples]}
        print(f"rephrase: {stats}", file=sys.stderr, flush=True)
        result["experiment"] = experiment(records, text[cut:], Path(folder), args.iters, args.seeds)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
