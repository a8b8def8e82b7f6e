"""Balanced training counts: every input file weighs the same, however long it is.

A multilingual corpus is rarely even: a few megabytes of English beside a few kilobytes of
Swahili. A trainer that counts raw occurrences spends its vocabulary on the big file, and the
small language pays with many more tokens per word. `balanced_chunk_counts` counts each file's
pre-token chunks on its own and scales them so that every file stands for as many characters as
the longest one (a short file is, in effect, repeated): the trainer then sees each language in
equal measure. Both trainers take these counts (`--balance` in `groklm tokenizer train`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from groklm.errors import DataError
from groklm.tokenizer.corpus import FileGroup, directory_group, iter_texts
from groklm.tokenizer.trainer import count_chunks


def training_units(inputs) -> list:
    """The parts that `balanced_chunk_counts` weighs equally: each file (a directory's or a
    group's files one by one) and each string of text."""
    items = [inputs] if isinstance(inputs, (str, Path, FileGroup)) else list(inputs)
    units: list = []
    for item in items:
        if isinstance(item, Path) and item.is_dir():
            item = directory_group(item)
        units.extend(item.files if isinstance(item, FileGroup) else [item])
    return units


def _measured(texts: Iterable[str], size: list[int]) -> Iterator[str]:
    """`texts`, adding up their characters in `size[0]` as they pass."""
    for text in texts:
        size[0] += len(text)
        yield text


def balanced_chunk_counts(
    inputs, pattern: str, special_tokens: Iterable[str] = (), errors: str = "strict"
) -> Counter:
    """Chunk counts where every unit of `training_units(inputs)` contributes as many characters
    as the longest one: unit u's counts are multiplied by longest / length(u) and rounded (a
    chunk that occurs keeps a count of at least 1)."""
    specials = list(special_tokens)
    per_unit: list[tuple[Counter, int]] = []
    for unit in training_units(inputs):
        size = [0]
        counts = count_chunks(_measured(iter_texts(unit, errors), size), pattern, specials)
        if size[0]:
            per_unit.append((counts, size[0]))
    if not per_unit:
        raise DataError("the training corpus is empty: no text to learn a vocabulary from")
    longest = max(size for _, size in per_unit)
    total: Counter = Counter()
    for counts, size in per_unit:
        weight = longest / size
        for chunk, count in counts.items():
            total[chunk] += max(1, round(count * weight))
    return total
