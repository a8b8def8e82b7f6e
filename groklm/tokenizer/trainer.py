"""Byte-level BPE training: count pre-token chunks once, then merge incrementally.

The algorithm, in words:

1. Split the text into chunks with the pre-split regex (words, numbers, punctuation runs,
   whitespace) and count each distinct chunk. A corpus of millions of chunks usually has only
   tens of thousands of distinct ones, and merges never cross a chunk boundary, so from here
   on we work on the distinct chunks, each weighted by its count.
2. Count every adjacent pair of tokens over those chunks, and remember which chunks hold it.
3. Repeat: take the most frequent pair (ties: the smallest pair of ids), give it a new id,
   rewrite only the chunks that contain it, and adjust the counts of the pairs around each
   rewritten spot. No pass over the whole corpus ever happens again.

Two representation tricks keep the hot loop in C:
- A chunk is a Python `str` with one character per token: character `chr(i)` is token id `i`.
  Bytes 0..255 are Latin-1 characters, so `chunk.encode("utf-8").decode("latin-1")` is the
  starting point, and merging a pair everywhere in a chunk is `str.replace` (which scans left
  to right without overlaps, exactly the BPE rule).
- A pair is the 2-character string of its two tokens, so "does this chunk still hold the
  pair?" is the substring test `pair in chunk`.

The best pair comes from a heap with lazy invalidation: counts of old pairs only ever go down,
so an entry whose count is out of date is re-pushed with the true count when it surfaces. Pairs
that contain the new token are pushed once per merge, with their final counts.

Unique bytes: a merge whose bytes already belong to a token (e.g. "a"+"bc" after "ab"+"c") is
skipped and the next best pair is taken. Every token then has distinct bytes, which is what
tiktoken's rank-by-bytes encoder needs to reproduce our merges exactly.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable

import regex

from groklm.errors import DataError


def count_chunks(
    texts: Iterable[str],
    pattern: str,
    special_tokens: Iterable[str] = (),
    progress=None,
) -> Counter:
    """Count the distinct pre-token chunks of `texts`. Special-token text is cut out first.

    (Splitting on several threads was tried: `regex` must hold the GIL to build each match
    string, so it was slower. Counting with `Counter.update` on a list runs in C.)
    """
    compiled = regex.compile(pattern)
    specials = sorted(special_tokens, key=len, reverse=True)
    special_re = regex.compile("|".join(regex.escape(s) for s in specials)) if specials else None
    counts: Counter = Counter()
    for text in texts:
        for part in special_re.split(text) if special_re else (text,):
            counts.update(compiled.findall(part))
        if progress is not None:
            progress.update(len(text.encode("utf-8")))
    return counts


def train_merges(
    chunk_counts: dict[str, int],
    num_merges: int,
    min_frequency: int = 2,
    progress=None,
) -> list[tuple[int, int]]:
    """Learn up to `num_merges` merges from counted chunks; merge i creates token id 256 + i."""
    if not chunk_counts:
        raise DataError("the training corpus is empty: no text to learn merges from")
    if 256 + num_merges > 0x110000:
        raise DataError("vocab size too large (at most 1,114,112 tokens)")

    # Each distinct chunk as a string of token characters (see the module docstring).
    words: list[str] = []
    freqs: list[int] = []
    for chunk, count in chunk_counts.items():
        symbols = chunk.encode("utf-8").decode("latin-1")
        if len(symbols) > 1:  # a single byte never takes part in a pair
            words.append(symbols)
            freqs.append(count)

    # Pair counts, and for each pair the indices of the chunks that contain it. An index can go
    # stale (the pair was merged away from that chunk); it is checked when used.
    stats: dict[str, int] = defaultdict(int)
    where: dict[str, set[int]] = defaultdict(set)
    for index, (word, freq) in enumerate(zip(words, freqs)):
        for i in range(len(word) - 1):
            pair = word[i : i + 2]
            stats[pair] += freq
            where[pair].add(index)

    heap = [(-count, pair) for pair, count in stats.items()]
    heapq.heapify(heap)
    token_bytes: list[bytes] = [bytes([b]) for b in range(256)]
    existing = set(token_bytes)
    merges: list[tuple[int, int]] = []

    while len(merges) < num_merges and heap:
        neg_count, pair = heapq.heappop(heap)
        count = stats.get(pair, 0)
        if count != -neg_count:  # stale entry: re-queue with the true count
            if count >= min_frequency:
                heapq.heappush(heap, (-count, pair))
            continue
        if count < min_frequency:
            break
        a, b = pair
        new_bytes = token_bytes[ord(a)] + token_bytes[ord(b)]
        if new_bytes in existing:
            continue  # never two tokens with the same bytes (see the module docstring)
        new_id = 256 + len(merges)
        merges.append((ord(a), ord(b)))
        token_bytes.append(new_bytes)
        existing.add(new_bytes)
        _apply_merge(pair, chr(new_id), words, freqs, stats, where, heap)
        if progress is not None:
            progress.update(1)
    return merges


def _apply_merge(pair, new, words, freqs, stats, where, heap) -> None:
    """Rewrite every chunk holding `pair` and patch the pair counts around each rewrite.

    In the rewritten chunk, each occurrence of the new token `new` at position j replaced the
    old pair `a b`. Its neighbours tell which old pairs vanished and which new ones appeared:
        x a b y  ->  x new y      loses (x,a), (a,b), (b,y); gains (x,new), (new,y)
    where a left neighbour that is itself `new` stood for `b` in the old chunk (so "a b a b"
    loses (b,a) and gains (new,new)), and a right neighbour that is `new` is handled by that
    occurrence's own left side, so nothing is counted twice.
    """
    a, b = pair
    touched: set[str] = set()
    for index in where.pop(pair):
        word = words[index]
        if pair not in word:
            continue  # stale index
        freq = freqs[index]
        word = word.replace(pair, new)
        words[index] = word
        last = len(word) - 1
        j = word.find(new)
        while j != -1:
            if j > 0:
                x = word[j - 1]
                stats[(b if x == new else x) + a] -= freq
                gained = x + new
                stats[gained] += freq
                where[gained].add(index)
                touched.add(gained)
            if j < last:
                y = word[j + 1]
                if y != new:
                    stats[b + y] -= freq
                    gained = new + y
                    stats[gained] += freq
                    where[gained].add(index)
                    touched.add(gained)
            j = word.find(new, j + 1)
    del stats[pair]
    for gained in touched:
        heapq.heappush(heap, (-stats[gained], gained))
