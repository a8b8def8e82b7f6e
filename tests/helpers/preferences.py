"""The reward and DPO tests' shared material: a tiny base run and preference pairs that are easy
to learn (the chosen reply always ends in "yes", the rejected one in "no")."""

from __future__ import annotations

import json
import random
from pathlib import Path

from groklm.tokenizer.char import CharTokenizer

from helpers.runs import tiny_run

CHARS = "abcdefghijklmnopqrstuvwxyz ?!.,:0123456789\n"
# Fast settings for a few dozen steps of a tiny model on one CPU thread.
FAST = {"batch_size": 8, "lr": 3e-3, "min_lr": 3e-4, "warmup_iters": 5, "eval_interval": 20, "eval_iters": 4,
        "log_interval": 5, "device": "cpu"}


def preference_base(directory: Path, seed: int = 0) -> Path:
    """A random two-layer GPT with a character tokenizer over CHARS (in that order): a stand-in for SFT."""
    return tiny_run(directory, CharTokenizer(CHARS), seed=seed, n_layer=2, n_head=2, n_embd=32, block_size=64, dropout=0.0)


def easy_pairs(n: int, seed: int = 0) -> list[dict]:
    """The chosen reply always ends in "yes", the rejected one in "no"; the rest is noise."""
    rng = random.Random(seed)
    word = lambda k: "".join(rng.choice("abcdefgh") for _ in range(k))  # noqa: E731
    pairs = []
    for _ in range(n):
        prompt = [{"role": "user", "content": word(rng.randint(2, 6))}]
        pairs.append({"prompt": prompt, "chosen": f"{word(rng.randint(1, 4))} yes", "rejected": f"{word(rng.randint(1, 4))} no"})
    return pairs


def write_pairs(path: Path, pairs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return path
