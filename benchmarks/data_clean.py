"""Data cleaning: how fast it runs, and whether it helps a small model.

1. Throughput. About --mb MB of documents built in memory from Tiny Shakespeare: ~150-word
   chunks, copied over and over with 10% of their words replaced (distinct documents), 10%
   of them exact copies and 10% copies with two words changed (near duplicates). Timed: the
   deduplication rules alone (exact_dup + near_dup), and every rule. Reading files is not
   timed. MB/s counts the UTF-8 bytes of the documents.

2. Experiment. A dirty corpus: 90% of the chunks (the rest is held out, clean), plus 30% more
   documents that are copies or near copies of a few chunks, and boilerplate lines ("We use
   cookies...") in a third of the documents. A tiny character GPT is pretrained on it with and
   without `--clean`, the same steps and batch (the same token budget); both are scored on the
   held-out clean chunks (mean loss over every non-overlapping block).

The text comes from ../shared/data/tinyshakespeare.txt beside the repo or $GROKLM_SHAKESPEARE.
Prints one JSON line on stdout (progress on stderr):
    OMP_NUM_THREADS=1 nice python benchmarks/data_clean.py [--mb 100] [--iters 600] [--seed 1337] [--skip-throughput]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BOILERPLATE = ["We use cookies to improve your experience. Read our cookie policy.", "Click here to subscribe now!",
               "Copyright 2024. All rights reserved.", "Privacy policy | Terms of use", "Back to top"]


def shakespeare_text() -> str:
    path = os.environ.get("GROKLM_SHAKESPEARE") or REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
    return Path(path).read_text()


def chunks(text: str, words: int = 150) -> list[str]:
    """Runs of whole speeches (blank-line paragraphs) of at least `words` words."""
    out, current = [], []
    for paragraph in text.split("\n\n"):
        current.append(paragraph)
        if sum(len(p.split()) for p in current) >= words:
            out.append("\n\n".join(current))
            current = []
    return out


def edit(text: str, n: int, rng: random.Random, vocabulary: list[str]) -> str:
    """`text` with n of its words replaced by random ones (line breaks kept)."""
    lines = [line.split(" ") for line in text.split("\n")]
    places = [(i, j) for i, line in enumerate(lines) for j in range(len(line)) if line[j]]
    for i, j in rng.sample(places, min(n, len(places))):
        lines[i][j] = rng.choice(vocabulary)
    return "\n".join(" ".join(line) for line in lines)


def synthetic_corpus(base: list[str], megabytes: float, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    vocabulary = sorted({w for text in base for w in text.split()})
    docs, size = [], 0
    while size < megabytes * 1e6:
        roll = rng.random()
        if roll < 0.1 and docs:
            doc = rng.choice(docs)
        elif roll < 0.2 and docs:
            doc = edit(rng.choice(docs), 2, rng, vocabulary)
        else:
            original = rng.choice(base)
            doc = edit(original, len(original.split()) // 10, rng, vocabulary)
        docs.append(doc)
        size += len(doc.encode())
    return docs


def throughput(docs: list[str], rules: tuple[str, ...]) -> dict:
    from groklm.data.clean import CleanConfig, Cleaner, Document

    cleaner = Cleaner(CleanConfig(rules=rules))
    size = sum(len(d.encode()) for d in docs)
    start = time.perf_counter()
    kept = sum(1 for _ in cleaner.clean(Document("synthetic", Path("synthetic"), d) for d in docs))
    seconds = time.perf_counter() - start
    removed = {rule: counts["documents"] for rule, counts in cleaner.totals().removed.items()}
    return {"mb": round(size / 1e6, 1), "documents": len(docs), "kept": kept, "removed": removed,
            "seconds": round(seconds, 1), "mb_per_s": round(size / 1e6 / seconds, 2)}


def dirty_corpus(train: list[str], seed: int = 0) -> list[str]:
    """The training chunks, plus 30% more documents copied or near-copied from 5% of them, with
    boilerplate lines added to a third of all documents; shuffled."""
    rng = random.Random(seed)
    vocabulary = sorted({w for text in train for w in text.split()})
    popular = rng.sample(train, len(train) // 20)
    extra = [rng.choice(popular) if rng.random() < 0.5 else edit(rng.choice(popular), 2, rng, vocabulary)
             for _ in range(int(0.3 * len(train)))]
    docs = train + extra
    rng.shuffle(docs)
    return ["\n".join([rng.choice(BOILERPLATE), doc, rng.choice(BOILERPLATE)]) if rng.random() < 1 / 3 else doc
            for doc in docs]


def heldout_loss(run: Path, text: str) -> float:
    """Mean next-token loss over every non-overlapping block of `text`."""
    import torch

    from groklm.runs import load

    model, tokenizer = load(run)
    ids = torch.tensor(tokenizer.encode(text))
    block = model.config.block_size
    n = (len(ids) - 1) // block
    x, y = ids[: n * block].view(n, block), ids[1 : n * block + 1].view(n, block)
    with torch.no_grad():
        losses = [model(x[i : i + 64], y[i : i + 64])[1].item() * len(x[i : i + 64]) for i in range(0, n, 64)]
    return sum(losses) / n


def experiment(base: list[str], folder: Path, iters: int, seed: int) -> dict:
    from groklm.data.clean import CleanConfig
    from groklm.data.prepare import prepare
    from groklm.rundir import read_json
    from groklm.train.pretrain import pretrain

    split = int(0.9 * len(base))
    train, heldout = base[:split], base[split:]
    corpus = folder / "dirty.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in dirty_corpus(train)))
    settings = {"n_layer": 2, "n_head": 4, "n_embd": 96, "block_size": 64, "batch_size": 16, "max_iters": iters,
                "eval_interval": iters, "eval_iters": 5, "log_interval": 100, "warmup_iters": 50, "lr": 3e-3,
                "dropout": 0.0, "device": "cpu", "seed": seed}
    result = {"train_chunks": len(train), "heldout_chunks": len(heldout), "tokens_seen": iters * 16 * 64, "seed": seed}
    for name, cleaning in (("raw", None), ("cleaned", CleanConfig())):
        data = folder / f"data-{name}"
        meta = prepare([str(corpus)], "char", data, val_fraction=0.05, progress=False, cleaning=cleaning,
                       licenses=["public-domain"])
        totals = read_json(data / "manifest.json")["totals"]
        start = time.perf_counter()
        run = pretrain(data, folder / f"run-{name}", overrides=settings, progress=False)
        result[name] = {"documents": meta["documents"], "train_tokens": meta["train_tokens"],
                        "removed": {rule: {k: v for k, v in c.items() if k != "bytes"} for rule, c in totals["removed"].items()},
                        "heldout_loss": round(heldout_loss(run, "\n\n".join(heldout)), 4),
                        "train_seconds": round(time.perf_counter() - start, 1)}
        print(f"{name}: {result[name]}", file=sys.stderr, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=100.0, help="size of the throughput corpus (default 100)")
    parser.add_argument("--iters", type=int, default=600, help="pretraining steps of each model (default 600)")
    parser.add_argument("--seed", type=int, default=1337, help="the models' training seed (default 1337, as TrainConfig's)")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from groklm.data.clean import RULES

    base = chunks(shakespeare_text())
    result = {"benchmark": "data_clean"}
    if not args.skip_throughput:
        docs = synthetic_corpus(base, args.mb)
        result["dedup"] = throughput(docs, ("exact_dup", "near_dup"))
        print(f"dedup: {result['dedup']}", file=sys.stderr, flush=True)
        result["all_rules"] = throughput(docs, RULES)
        print(f"all rules: {result['all_rules']}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as folder:
        result["experiment"] = experiment(base, Path(folder), args.iters, args.seed)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
