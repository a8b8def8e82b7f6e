"""`UnigramTokenizer`: a Unigram language model over pieces, the SentencePiece way.

A vocabulary of pieces (strings), each with a log-probability. Text is split into chunks by a
regex (a word with the space before it, or a run of whitespace) and each chunk is segmented into
the pieces whose log-probabilities add up to the most: the Viterbi path over the lattice of
every piece that occurs in the chunk. Unlike BPE there is no merge order; a piece is chosen
because the whole segmentation is likelier with it.

Byte fallback: ids 0..255 are the bytes `<0xNN>`. A character that no piece covers (one the
training text never had, or a rare one left out of the vocabulary) becomes the ids of its UTF-8
bytes, each scored below every piece, so the Viterbi path uses them only when it must. So every
text encodes, and `decode` gives back exactly the text that was encoded.

Ids: bytes 0..255, then the pieces from the likeliest down, then the special tokens.

Training (`UnigramTokenizer.train`), in words:
1. Count the distinct chunks of the corpus (as BPE training does, trainer.count_chunks).
2. Seed: every substring of up to MAX_PIECE_CHARS characters that occurs at least twice, the
   SEED_FACTOR x target most frequent (by occurrences x length), plus the characters that cover
   CHARACTER_COVERAGE of the text. Each starts with log(occurrences x length / total).
3. Expectation-maximisation: the forward-backward algorithm over each chunk's lattice gives
   every piece its expected count under the current model; the new log-probabilities are those
   counts, normalised.
4. Prune: a piece's loss is how much the likelihood of the corpus drops without it, estimated as
   (its count on the Viterbi paths) x (its log-probability - that of the best segmentation of
   its own text without it). The characters are never pruned; of the rest the lowest-loss pieces
   go, a quarter at a time, until the vocabulary has its size.
Pure Python: it is meant for corpora of megabytes, not gigabytes.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence

import regex

from groklm.errors import DataError, TokenizerError
from groklm.tokenizer.base import (
    FORMAT,
    FORMAT_VERSION,
    REPLACEMENT,
    BaseTokenizer,
    SpecialSplitter,
    check_new_specials,
    check_special_tokens,
    decode_with_table,
    ids_for_learning,
    table_lookup,
)
from groklm.tokenizer.bpe import check_header
from groklm.tokenizer.corpus import iter_texts
from groklm.tokenizer.trainer import count_chunks

# A word with the one space before it, or a run of whitespace (its last space left to the word
# after it). Text without spaces (Chinese, Japanese) is one chunk per run; the lattice cuts it.
PATTERN = r" ?\S+|\s+(?!\S)|\s+"
MAX_PIECE_CHARS = 16
SEED_FACTOR = 10  # seed pieces per piece of the final vocabulary
CHARACTER_COVERAGE = 0.9995  # the rarest characters beyond this share go to byte fallback
EM_STEPS = 2  # EM steps before each pruning
SHRINK = 0.75  # each pruning keeps this share of the pieces (never fewer than the target)
BYTE_PENALTY = 10.0  # a fallback byte scores this far below the least likely piece
_CACHE_LIMIT = 100_000
_MIN_EXPECTED = 1e-6  # the expected count of a piece no path uses


def viterbi(text: str, scores: dict[str, float], max_len: int, byte_score: float) -> list[str]:
    """The segmentation of `text` into pieces of `scores` with the highest total score. A
    character that is no piece is returned alone and scored `byte_score` per UTF-8 byte."""
    n = len(text)
    best = [0.0] + [-math.inf] * n
    back = [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(max(0, end - max_len), end):
            piece = text[start:end]
            score = scores.get(piece)
            if score is None:
                if end - start > 1:
                    continue
                score = byte_score * _byte_len(piece)
            if best[start] + score > best[end]:
                best[end] = best[start] + score
                back[end] = start
    pieces = []
    end = n
    while end > 0:
        pieces.append(text[back[end] : end])
        end = back[end]
    return pieces[::-1]


def _byte_len(char: str) -> int:
    return len(char.encode("utf-8", errors="surrogatepass"))


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))


class UnigramTokenizer(BaseTokenizer):
    """Unigram pieces with byte fallback. Build one with `UnigramTokenizer.train` or `load`."""

    type = "unigram"

    def __init__(
        self,
        pieces: Sequence[Sequence],
        *,
        pattern: str = PATTERN,
        special_tokens: dict[str, int] | Iterable[str] | None = None,
        source: str = "pieces",
    ):
        """pieces: (text, log-probability) pairs; piece k gets id 256 + k.
        special_tokens: a dict str -> id, or names whose ids follow the pieces."""
        bad = f"invalid unigram tokenizer ({source})"
        if not all(
            len(p) == 2 and isinstance(p[0], str) and p[0] and isinstance(p[1], (int, float)) and math.isfinite(p[1])
            for p in pieces
        ):
            raise TokenizerError(f"{bad}: each piece must be [non-empty text, finite log-probability]")
        self.scores: dict[str, float] = {p[0]: float(p[1]) for p in pieces}
        if len(self.scores) != len(pieces):
            raise TokenizerError(f"{bad}: two pieces have the same text")
        try:
            self.pattern = pattern
            self._compiled = regex.compile(pattern)
        except (regex.error, TypeError) as e:
            raise TokenizerError(f"{bad}: pattern {pattern!r} is not a valid regex ({e})") from None
        self._ids = {text: 256 + k for k, text in enumerate(self.scores)}
        self._max_len = max((len(text) for text in self.scores), default=1)
        self._byte_score = min(self.scores.values(), default=0.0) - BYTE_PENALTY

        if special_tokens is None or not isinstance(special_tokens, dict):
            names = check_new_specials(special_tokens)
            first = 256 + len(self.scores)
            special_tokens = {name: first + k for k, name in enumerate(names)}
        self.special_tokens = check_special_tokens(special_tokens, source)
        if any(i < 256 + len(self.scores) for i in self.special_tokens.values()):
            raise TokenizerError(f"{bad}: special token ids must come after the bytes and the pieces")
        self._vocab_size = max([255 + len(self.scores), *self.special_tokens.values()]) + 1
        self._table: list[bytes | None] = [bytes([b]) for b in range(256)]
        self._table += [text.encode("utf-8", errors="surrogatepass") for text in self.scores]
        self._table += [None] * (self._vocab_size - len(self._table))
        for text, token_id in self.special_tokens.items():
            self._table[token_id] = text.encode("utf-8")
        self._decode_table = [REPLACEMENT if data is None else data for data in self._table]
        self._specials = SpecialSplitter()
        self._cache: dict[str, list[int]] = {}

    # --- training ---------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        inputs,
        vocab_size: int,
        *,
        special_tokens: Iterable[str] | None = None,
        errors: str = "strict",
        chunk_counts: Counter | None = None,
    ) -> UnigramTokenizer:
        """Learn a Unigram vocabulary (see the module docstring).

        inputs: a `pathlib.Path` (file or directory), a `str` of text, or an iterable of them.
        vocab_size: total size, 256 bytes + pieces + special tokens.
        chunk_counts: counts already made with `PATTERN` (e.g. balance.balanced_chunk_counts);
            `inputs` is then not read.
        """
        names = check_new_specials(special_tokens)
        target = ids_for_learning(vocab_size, len(names), "a unigram tokenizer", minimum=1)
        if chunk_counts is None:
            chunk_counts = count_chunks(iter_texts(inputs, errors), PATTERN, names)
        chunks = [(chunk, count) for chunk, count in chunk_counts.items() if chunk]
        if not chunks:
            raise DataError("the training corpus is empty: no text to learn a vocabulary from")

        required = _covering_characters(chunks, target)
        scores = _seed(chunks, target, required)
        while True:
            for _ in range(EM_STEPS):
                scores = _em_step(chunks, scores)
            if len(scores) <= target:
                break
            scores = _prune(chunks, scores, required, max(target, int(len(scores) * SHRINK)))
        if len(scores) < target:
            warnings.warn(
                f"the corpus gave only {len(scores)} pieces, not {target}: the vocabulary has "
                f"{256 + len(scores) + len(names)} tokens, not {vocab_size}",
                stacklevel=2,
            )
        ordered = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
        return cls(ordered, special_tokens=names)

    # --- encoding ---------------------------------------------------------------------------
    def encode(self, text: str, allowed_special: Iterable[str] | str = ()) -> list[int]:
        """Ids of `text`: each chunk's Viterbi segmentation, characters without a piece as bytes."""
        if not isinstance(text, str):
            raise TokenizerError(f"can only encode str, not {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate has no bytes: U+FFFD, as the BPE does
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        allowed = self._allowed(allowed_special) if allowed_special else set()
        ids: list[int] = []
        for _, piece, is_special in self._specials.split(text, allowed):
            if is_special:
                ids.append(self.special_tokens[piece])
                continue
            for chunk in self._compiled.findall(piece):
                cached = self._cache.get(chunk)
                if cached is None:
                    cached = self._chunk_ids(chunk)
                    if len(self._cache) >= _CACHE_LIMIT:
                        self._cache.clear()
                    self._cache[chunk] = cached
                ids.extend(cached)
        return ids

    def _chunk_ids(self, chunk: str) -> list[int]:
        ids: list[int] = []
        for piece in viterbi(chunk, self.scores, self._max_len, self._byte_score):
            token_id = self._ids.get(piece)
            ids.extend([token_id] if token_id is not None else piece.encode("utf-8"))
        return ids

    # --- decoding and inspection --------------------------------------------------------------
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return decode_with_table(self._decode_table, ids)

    def token_bytes(self, token_id: int) -> bytes:
        return table_lookup(self._table, token_id)

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    # --- the file -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "type": self.type,
            "pattern": self.pattern,
            "special_tokens": self.special_tokens,
            # [text, log-probability], id 256 + position
            "pieces": [[text, round(score, 6)] for text, score in self.scores.items()],
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> UnigramTokenizer:
        check_header(data, source, cls.type)
        pieces = data.get("pieces")
        if not isinstance(pieces, list) or not all(isinstance(p, list) for p in pieces):
            raise TokenizerError(f"{source} is corrupt: 'pieces' must be a list of [text, log-probability]")
        if not isinstance(data.get("pattern"), str) or not isinstance(data.get("special_tokens"), dict):
            raise TokenizerError(f"{source} is corrupt: 'pattern' or 'special_tokens' is missing")
        return cls(pieces, pattern=data["pattern"], special_tokens=data["special_tokens"], source=source)


# --- training steps -----------------------------------------------------------------------------


def _covering_characters(chunks: list[tuple[str, int]], target: int) -> set[str]:
    """The most frequent characters that cover CHARACTER_COVERAGE of the text (at most `target`)."""
    counts: Counter = Counter()
    for chunk, count in chunks:
        for char in chunk:
            counts[char] += count
    total = sum(counts.values())
    kept: set[str] = set()
    covered = 0
    for char, count in counts.most_common(target):
        if covered >= CHARACTER_COVERAGE * total:
            break
        kept.add(char)
        covered += count
    return kept


def _seed(chunks: list[tuple[str, int]], target: int, required: set[str]) -> dict[str, float]:
    """The starting vocabulary: the required characters and the most frequent substrings."""
    counts: Counter = Counter()
    for chunk, count in chunks:
        n = len(chunk)
        for start in range(n):
            for end in range(start + 2, min(n, start + MAX_PIECE_CHARS) + 1):
                counts[chunk[start:end]] += count
    char_counts: Counter = Counter()
    for chunk, count in chunks:
        for char in chunk:
            char_counts[char] += count
    substrings = [(s, c * len(s)) for s, c in counts.items() if c >= 2]
    substrings.sort(key=lambda item: (-item[1], item[0]))
    seed = {char: float(char_counts[char]) for char in required}
    for text, weight in substrings[: SEED_FACTOR * target]:
        seed[text] = float(weight)
    total = sum(seed.values())
    return {text: math.log(weight / total) for text, weight in seed.items()}


def _em_step(chunks: list[tuple[str, int]], scores: dict[str, float]) -> dict[str, float]:
    """One expectation-maximisation step: expected counts by forward-backward, normalised."""
    max_len = max(len(text) for text in scores)
    byte_score = min(scores.values()) - BYTE_PENALTY
    expected: Counter = Counter()
    for chunk, count in chunks:
        n = len(chunk)
        # edges[end]: (start, piece or None for a fallback character, score)
        edges: list[list[tuple[int, str | None, float]]] = [[] for _ in range(n + 1)]
        for end in range(1, n + 1):
            for start in range(max(0, end - max_len), end):
                piece = chunk[start:end]
                score = scores.get(piece)
                if score is not None:
                    edges[end].append((start, piece, score))
                elif end - start == 1:
                    edges[end].append((start, None, byte_score * _byte_len(piece)))
        alpha = [0.0] + [-math.inf] * n
        for end in range(1, n + 1):
            alpha[end] = _logsumexp([alpha[start] + score for start, _, score in edges[end]])
        beta = [-math.inf] * n + [0.0]
        incoming: list[list[tuple[int, float]]] = [[] for _ in range(n + 1)]  # by start: (end, score)
        for end in range(1, n + 1):
            for start, _, score in edges[end]:
                incoming[start].append((end, score))
        for start in range(n - 1, -1, -1):
            beta[start] = _logsumexp([score + beta[end] for end, score in incoming[start]])
        log_z = alpha[n]
        for end in range(1, n + 1):
            for start, piece, score in edges[end]:
                if piece is not None:
                    expected[piece] += count * math.exp(alpha[start] + score + beta[end] - log_z)
    # A piece no path uses keeps a tiny count: pruning, not EM, decides what goes (by its loss, 0).
    counts = {text: max(expected[text], _MIN_EXPECTED) for text in scores}
    total = sum(counts.values())
    return {text: math.log(c / total) for text, c in counts.items()}


def _prune(chunks: list[tuple[str, int]], scores: dict[str, float], required: set[str], keep: int) -> dict[str, float]:
    """Keep the `keep` pieces whose removal would cost the corpus the most likelihood."""
    max_len = max(len(text) for text in scores)
    byte_score = min(scores.values()) - BYTE_PENALTY
    used: Counter = Counter()
    for chunk, count in chunks:
        for piece in viterbi(chunk, scores, max_len, byte_score):
            used[piece] += count
    loss: dict[str, float] = {}
    for text, score in list(scores.items()):
        if text in required:
            continue
        if not used[text]:
            loss[text] = 0.0
            continue
        del scores[text]  # the best segmentation of its own text without it
        alternative = viterbi(text, scores, max_len, byte_score)
        scores[text] = score
        alt_score = sum(scores.get(p, byte_score * _byte_len(p)) for p in alternative)
        loss[text] = used[text] * (score - alt_score)
    ranked = sorted(loss, key=lambda text: (-loss[text], text))
    survivors = set(ranked[: max(0, keep - len(required))]) | required
    return {text: score for text, score in scores.items() if text in survivors}
