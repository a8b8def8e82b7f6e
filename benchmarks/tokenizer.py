"""Tokenizer benchmark: groklm vs Hugging Face `tokenizers` and tiktoken. Prints one JSON line.

Corpus (deterministic): ../shared/data/tinyshakespeare.txt when present, then the Python
standard library's own .py files in sorted order, up to 6.5 MB; the first 90% (by document)
trains, the last 10% is held out.

- training time at vocab 8192: groklm (GPT-2 pre-split, the same as HF's ByteLevel, so the BPE
  itself is compared; and GPT-4's, our default) vs HF BpeTrainer + ByteLevel;
- bytes/token on the held-out text for each trained tokenizer;
- encode throughput (MB/s, one string, one thread) on the held-out text: our fast path, our
  reference path (fresh chunk cache), tiktoken on the same merges, HF `tokenizers`.

Goals: training <= 3x HF's time, bytes/token within 1% of HF's, fast encode
>= 0.8x tiktoken. Progress goes to stderr.

    python benchmarks/tokenizer.py
"""

from __future__ import annotations

import json
import os
import sys
import sysconfig
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from groklm.tokenizer import DEFAULT_SPECIAL_TOKENS, Tokenizer  # noqa: E402

VOCAB_SIZE = 8192
TOTAL_BYTES = 6_500_000
SHAKESPEARE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare.txt"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_corpus() -> tuple[list[str], list[str], list[str]]:
    docs, sources, size = [], [], 0
    if SHAKESPEARE.exists():
        docs.append(SHAKESPEARE.read_text(encoding="utf-8"))
        sources.append("tinyshakespeare.txt")
        size += len(docs[-1].encode())
    root = Path(sysconfig.get_paths()["stdlib"])
    sources.append(f"{root}/**/*.py (sorted)")
    for path in sorted(root.glob("**/*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            docs.append(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
        size += len(docs[-1].encode())
        if size >= TOTAL_BYTES:
            break
    cut, seen = 0, 0
    while seen < 0.9 * size:
        seen += len(docs[cut].encode())
        cut += 1
    return docs[:cut], docs[cut:], sources


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def throughput(encoders: dict, text: str, rounds: int) -> dict[str, float]:
    """MB/s of each encoder: best of `rounds`, the encoders taking turns so that a busy
    machine slows them alike."""
    best = {name: float("inf") for name in encoders}
    for _ in range(rounds):
        for name, fn in encoders.items():
            best[name] = min(best[name], timed(partial(fn, text))[1])
    mb = len(text.encode()) / 1e6
    return {name: round(mb / seconds, 2) for name, seconds in best.items()}


def train_hf(docs: list[str]):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers, trainers

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(DEFAULT_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(docs, trainer)
    return hf


def main() -> None:
    train_docs, held_docs, sources = build_corpus()
    train_bytes = sum(len(d.encode()) for d in train_docs)
    held_out = "".join(held_docs)
    held_bytes = len(held_out.encode())
    log(f"corpus: {train_bytes / 1e6:.2f} MB train, {held_bytes / 1e6:.2f} MB held out")

    log("training groklm (gpt2 pattern)...")
    ours, t_ours = timed(lambda: Tokenizer.train(train_docs, VOCAB_SIZE, pattern="gpt2"))
    log(f"  {t_ours:.2f}s; training groklm (gpt4 pattern)...")
    ours4, t_ours4 = timed(lambda: Tokenizer.train(train_docs, VOCAB_SIZE, pattern="gpt4"))
    log(f"  {t_ours4:.2f}s; training HF tokenizers...")
    hf, t_hf = timed(lambda: train_hf(train_docs))
    log(f"  {t_hf:.2f}s")

    def bytes_per_token(n_tokens: int) -> float:
        return round(held_bytes / n_tokens, 4)

    bpt_ours = bytes_per_token(sum(map(len, ours.encode_batch(held_docs))))
    bpt_ours4 = bytes_per_token(sum(map(len, ours4.encode_batch(held_docs))))
    bpt_hf = bytes_per_token(sum(len(e.ids) for e in hf.encode_batch(held_docs)))

    log("encode throughput...")
    encoding = ours.to_tiktoken()

    def reference(text: str):
        ours._cache.clear()
        return ours.encode_reference(text)

    speed = throughput({"groklm_fast": ours.encode, "tiktoken": lambda t: encoding.encode(t, disallowed_special=())}, held_out, 7)
    speed |= throughput({"groklm_reference": reference, "hf_tokenizers": lambda t: hf.encode(t).ids}, held_out, 2)
    assert ours.encode(held_out) == encoding.encode(held_out, disallowed_special=())

    ratio = t_ours / t_hf
    bpt_diff = (bpt_ours - bpt_hf) / bpt_hf
    fast_ratio = speed["groklm_fast"] / speed["tiktoken"]
    result = {
        "benchmark": "tokenizer",
        "corpus": {"sources": sources, "train_mb": round(train_bytes / 1e6, 2), "heldout_mb": round(held_bytes / 1e6, 2)},
        "vocab_size": VOCAB_SIZE,
        "cpus": os.cpu_count(),
        "train_s": {"groklm_gpt2": round(t_ours, 2), "groklm_gpt4": round(t_ours4, 2), "hf_tokenizers": round(t_hf, 2)},
        "train_time_vs_hf": round(ratio, 2),
        "bytes_per_token": {"groklm_gpt2": bpt_ours, "groklm_gpt4": bpt_ours4, "hf_tokenizers": bpt_hf},
        "bytes_per_token_vs_hf": round(bpt_diff, 4),
        "encode_mb_s": speed,
        "fast_vs_tiktoken": round(fast_ratio, 2),
        "targets_met": {
            "train_le_3x_hf": ratio <= 3,
            "bytes_per_token_within_1pct_of_hf": abs(bpt_diff) <= 0.01,
            "fast_encode_ge_0.8x_tiktoken": fast_ratio >= 0.8,
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
