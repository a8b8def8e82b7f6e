"""`Tokenizer`: byte-level BPE with a regex pre-split, a readable reference encoder and a fast one.

How text becomes ids:
1. If the caller allowed some special tokens, cut the text at them; each becomes its own id.
   Otherwise special-token *text* is ordinary text (a user cannot inject `<|im_end|>`).
2. Split each piece into chunks with the pre-split regex (GPT-4's by default).
3. Encode each chunk's UTF-8 bytes with byte pair encoding: start from one token per byte and
   apply the learned merges, earliest-learned first, until none applies.

Ids: bytes 0..255 are ids 0..255, merge i makes id 256 + i, special tokens come last. (An
imported vocabulary keeps its own ids; see imports.py.)

Real vocabularies are not always complete: SmolLM2's lacks the byte tokens of some control
characters and of bytes that never occur in UTF-8. The Hugging Face `tokenizers` library then
drops such a byte before merging (its neighbours meet and may merge), or, when the file names
an unknown token, writes that token in its place (a barrier no merge crosses). `byte_ids`
holds None for a missing byte and `unk_id` says which of the two happens; both encoders do it.

`encode` uses tiktoken (fast.py); `encode_reference` is the same algorithm in plain Python,
kept as the readable definition and as the oracle in the tests.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import regex
from tqdm.auto import tqdm

from groklm.errors import TokenizerError
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
    is_id,
    table_lookup,
)
from groklm.tokenizer.corpus import iter_texts, total_bytes
from groklm.tokenizer.fast import build_fast_encoder
from groklm.tokenizer.trainer import count_chunks, train_merges

# GPT-2's pre-split, as released with GPT-2 (HF tokenizers' ByteLevel uses the same string).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# SmolLM2's: every digit alone (HF's Digits(individual_digits=True)), then GPT-2's regex on the
# text between digits. As one regex: a digit is its own chunk, and a digit ends the text the
# GPT-2 part sees, so a whitespace run before a digit is kept whole (`\s+(?!\S)` would give
# its last character to the digit's chunk: "a  1" is "a", "  ", "1", not "a", " ", " ", "1").
SMOLLM_PATTERN = r"""\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"""
# GPT-4's (tiktoken cl100k_base): case-insensitive contractions, a letter run may take one
# leading non-letter (so "(foo" is one chunk), numbers are cut into groups of at most 3 digits.
# tiktoken writes the digits as `\p{N}{1,3}+`; we drop that `+`, which changes nothing here but
# means "repeat the group" to the Oniguruma engine of HF tokenizers (it would keep "1000" whole).
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
PATTERNS = {"gpt4": GPT4_PATTERN, "gpt2": GPT2_PATTERN, "smollm": SMOLLM_PATTERN}

# A custom pattern must match every character, or `findall` would silently drop text.
_PROBE = "Hello, world! It's 2024: ça coûte 12,50 €.\n\n\tdef f(x):\r\n    return x**2  # ok 🙂 日本語 \x00\x7f  "

_CACHE_LIMIT = 100_000  # chunks remembered by the reference encoder


def resolve_pattern(pattern: str) -> str:
    """A pattern name ("gpt4", "gpt2") or a regex of your own, checked to compile and to cover text."""
    if not isinstance(pattern, str) or not pattern:
        raise TokenizerError(f"pattern must be 'gpt4', 'gpt2' or a regex string, not {pattern!r}")
    if pattern in PATTERNS:
        return PATTERNS[pattern]
    try:
        compiled = regex.compile(pattern)
    except regex.error as e:
        raise TokenizerError(f"pattern {pattern!r} is not a valid regex ({e}); use 'gpt4', 'gpt2' or a regex") from None
    if sum(len(chunk) for chunk in compiled.findall(_PROBE)) != len(_PROBE):
        raise TokenizerError(
            f"pattern {pattern!r} does not match every character of sample text, so some text would be "
            "lost; use 'gpt4', 'gpt2', or a regex whose alternatives cover everything (end it with |\\s+|.)"
        )
    return pattern


class Tokenizer(BaseTokenizer):
    """Byte-level BPE. Build one with `Tokenizer.train`, `Tokenizer.load` or an import."""

    type = "bpe"

    def __init__(
        self,
        merges: Sequence[Sequence[int]],
        *,
        pattern: str = "gpt4",
        special_tokens: dict[str, int] | Iterable[str] | None = None,
        byte_ids: Sequence[int | None] | None = None,
        extra_tokens: dict[int, bytes] | None = None,
        unk_id: int | None = None,
        fuse_unk: bool = False,
        source: str = "merges",
    ):
        """
        merges: in priority order; each `(left, right)` (creating id 256 + i) or `(left, right, id)`.
        special_tokens: a dict str -> id, or names whose ids are given after the vocabulary
            (the three default ones are always included).
        byte_ids: the id of each byte value, when not the byte value itself (imports); None
            for a byte the vocabulary lacks.
        extra_tokens: id -> bytes for tokens that no merge creates (imports; decode only).
        unk_id: what a missing byte becomes (None: it is dropped); fuse_unk: one unk id for a
            run of missing bytes.
        """
        self.pattern = resolve_pattern(pattern)
        self._compiled = regex.compile(self.pattern)
        bad = f"invalid tokenizer ({source})"

        if byte_ids is None:
            byte_ids = list(range(256))
        byte_ids = list(byte_ids)
        present = [i for i in byte_ids if i is not None]
        if len(byte_ids) != 256 or len(set(present)) != len(present) or not all(is_id(i) for i in present):
            raise TokenizerError(f"{bad}: byte_ids must be 256 distinct ids >= 0 (None for a missing byte)")
        table: dict[int, bytes] = {i: bytes([b]) for b, i in enumerate(byte_ids) if i is not None}
        self._missing = bytes(b for b, i in enumerate(byte_ids) if i is None)
        for token_id, data in (extra_tokens or {}).items():
            if not is_id(token_id) or token_id in table or not isinstance(data, bytes) or len(data) < 2:
                raise TokenizerError(f"{bad}: extra token {token_id!r} is not a new id with at least 2 bytes")
            table[token_id] = data
        self._byte_ids = byte_ids
        self._extra_ids = sorted(extra_tokens or {})

        self._merges: list[tuple[int, int, int]] = []
        self._merge_rank: dict[tuple[int, int], tuple[int, int]] = {}  # (left, right) -> (rank, new id)
        for rank, merge in enumerate(merges):
            if len(merge) == 2:
                left, right, new_id = merge[0], merge[1], 256 + rank
            elif len(merge) == 3:
                left, right, new_id = merge
            else:
                raise TokenizerError(f"{bad}: merge {rank} is {merge!r}, expected [left, right] or [left, right, id]")
            if not all(is_id(i) for i in (left, right, new_id)) or left not in table or right not in table:
                raise TokenizerError(f"{bad}: merge {rank} {list(merge)} uses an id that is not defined before it")
            data = table[left] + table[right]
            if table.setdefault(new_id, data) != data:
                raise TokenizerError(f"{bad}: merge {rank} reuses id {new_id}, which already has other bytes")
            self._merges.append((left, right, new_id))
            self._merge_rank.setdefault((left, right), (rank, new_id))

        if special_tokens is None or not isinstance(special_tokens, dict):
            names = check_new_specials(special_tokens)
            first = max(table) + 1
            special_tokens = {name: first + k for k, name in enumerate(names)}
        self.special_tokens = check_special_tokens(special_tokens, source)
        # (an imported special token may also be a regular token of the same bytes, at the same id)
        clash = [t for t, i in self.special_tokens.items() if i in table and table[i] != t.encode("utf-8")]
        if clash:
            raise TokenizerError(f"{bad}: special tokens {clash} reuse ids of regular tokens")

        if unk_id is not None and not (is_id(unk_id) and (unk_id in table or unk_id in self.special_tokens.values())):
            raise TokenizerError(f"{bad}: unk_id {unk_id!r} is not a token id")
        self.unk_id, self.fuse_unk = unk_id, bool(fuse_unk)

        self._vocab_size = max([*table, *self.special_tokens.values()]) + 1
        self._table: list[bytes | None] = [None] * self._vocab_size
        for token_id, data in table.items():
            self._table[token_id] = data
        for text, token_id in self.special_tokens.items():
            self._table[token_id] = text.encode("utf-8")
        # decode never fails: an id with no token decodes to U+FFFD
        self._decode_table = [REPLACEMENT if data is None else data for data in self._table]
        self._cache: dict[str, list[int]] = {}
        self._fast = None
        self._specials = SpecialSplitter()
        self._prefix_cache: dict[frozenset, bool] = {}

    # --- training ---------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        inputs,
        vocab_size: int,
        *,
        pattern: str = "gpt4",
        special_tokens: Iterable[str] | None = None,
        min_frequency: int = 2,
        progress: bool = False,
        errors: str = "strict",
        chunk_counts: dict[str, int] | None = None,
    ) -> Tokenizer:
        """Learn a BPE from `inputs`, streamed in blocks.

        inputs: a `pathlib.Path` (file or directory), a `str` of text, or an iterable of them.
        vocab_size: total size, bytes + merges + special tokens. Training stops earlier (with a
            warning) when no pair occurs at least `min_frequency` times.
        special_tokens: extra special tokens after `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`.
            Their text is cut out of the corpus before counting.
        errors: "strict" (non-UTF-8 file -> DataError) or "replace" (U+FFFD, with a warning).
        chunk_counts: chunks already counted with `pattern` (e.g. balance.balanced_chunk_counts);
            `inputs` is then not read.
        """
        names = check_new_specials(special_tokens)
        num_merges = ids_for_learning(vocab_size, len(names), "a byte-level BPE", minimum=0)
        pattern_str = resolve_pattern(pattern)
        counts = chunk_counts
        if counts is None:
            with tqdm(total=total_bytes(inputs), unit="B", unit_scale=True, desc="counting chunks", disable=not progress) as bar:
                counts = count_chunks(iter_texts(inputs, errors), pattern_str, names, bar if progress else None)
        with tqdm(total=num_merges, unit="merge", desc="merging", disable=not progress) as bar:
            merges = train_merges(counts, num_merges, min_frequency, bar if progress else None)
        if len(merges) < num_merges:
            warnings.warn(
                f"the corpus gave only {len(merges)} merges with min_frequency={min_frequency}, not "
                f"{num_merges}: the vocabulary has {256 + len(merges) + len(names)} tokens, not {vocab_size}",
                stacklevel=2,
            )
        return cls(merges, pattern=pattern_str, special_tokens=names)

    # --- encoding ---------------------------------------------------------------------------
    def encode(self, text: str, allowed_special: Iterable[str] | str = ()) -> list[int]:
        """Ids of `text` (fast path, tiktoken). Special-token text counts as special only if allowed."""
        allowed = self._allowed(allowed_special) if allowed_special else set()
        text = _check_text(text)
        if allowed and self._prefix_specials(allowed):
            # tiktoken takes the first special token that matches, not the longest (an imported
            # vocabulary may have both "<|" and "<|endoftext|>"): cut at them here
            ids: list[int] = []
            for piece, is_special in self._split_specials(text, allowed):
                ids.extend([self.special_tokens[piece]] if is_special else self._encode_ordinary(piece, set()))
            return ids
        return self._encode_ordinary(text, allowed)

    def _encode_ordinary(self, text: str, allowed: set[str]) -> list[int]:
        if self._lacks_bytes_of(text):  # tiktoken cannot drop bytes: split here, merge there
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: U+FFFD, as tiktoken makes it
                text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return self._encode_chunks(text, allowed, self._fast_encoder().encode_piece, cache=False)
        return self._fast_encoder().encode(text, allowed)

    def _prefix_specials(self, allowed: set[str]) -> bool:
        """Is one of the allowed special tokens the beginning of another?"""
        key = frozenset(allowed)
        if key not in self._prefix_cache:
            ordered = sorted(allowed)  # a prefix sorts right before the tokens it begins
            self._prefix_cache[key] = any(b.startswith(a) for a, b in zip(ordered, ordered[1:]))
        return self._prefix_cache[key]

    def encode_batch(self, texts: Sequence[str], allowed_special: Iterable[str] | str = ()) -> list[list[int]]:
        """`encode` on many texts, on several threads."""
        allowed = self._allowed(allowed_special) if allowed_special else set()
        texts = [_check_text(t) for t in texts]
        if allowed and self._prefix_specials(allowed):
            return [self.encode(t, allowed) for t in texts]
        slow = [i for i, t in enumerate(texts) if self._lacks_bytes_of(t)]  # (only imported vocabularies)
        if not slow:
            return self._fast_encoder().encode_batch(texts, allowed)
        skip = set(slow)
        out = self._fast_encoder().encode_batch([t for i, t in enumerate(texts) if i not in skip], allowed)
        for i in slow:  # in increasing order, so each lands at its own index
            out.insert(i, self.encode(texts[i], allowed))
        return out

    def encode_reference(self, text: str, allowed_special: Iterable[str] | str = ()) -> list[int]:
        """The same as `encode`, in plain Python: the readable definition of this tokenizer."""
        allowed = self._allowed(allowed_special) if allowed_special else set()
        return self._encode_chunks(_check_text(text), allowed, self._bpe, cache=True)

    def _encode_chunks(self, text: str, allowed: set[str], bpe, cache: bool) -> list[int]:
        """Cut at allowed special tokens, split with the regex, encode each chunk's bytes with `bpe`."""
        ids: list[int] = []
        for piece, is_special in self._split_specials(text, allowed):
            if is_special:
                ids.append(self.special_tokens[piece])
                continue
            for chunk in self._compiled.findall(piece):
                cached = self._cache.get(chunk) if cache else None
                if cached is None:
                    cached = self._chunk_ids(chunk.encode("utf-8"), bpe)
                    if cache:
                        if len(self._cache) >= _CACHE_LIMIT:
                            self._cache.clear()
                        self._cache[chunk] = cached
                ids.extend(cached)
        return ids

    def _chunk_ids(self, data: bytes, bpe) -> list[int]:
        """One chunk: bytes the vocabulary lacks are dropped, or become `unk_id` between BPE runs."""
        if not self._missing or not self._lacks_bytes(data):
            return bpe(data)
        if self.unk_id is None:
            return bpe(data.translate(None, self._missing))
        ids: list[int] = []
        run = bytearray()
        last_unk = False
        for b in data:
            if self._byte_ids[b] is not None:
                run.append(b)
                continue
            if run:
                ids.extend(bpe(bytes(run)))
                run.clear()
                last_unk = False
            if not (self.fuse_unk and last_unk):
                ids.append(self.unk_id)
            last_unk = True
        if run:
            ids.extend(bpe(bytes(run)))
        return ids

    def _lacks_bytes(self, data: bytes) -> bool:
        return len(data.translate(None, self._missing)) != len(data)

    def _lacks_bytes_of(self, text: str) -> bool:
        """Does `text` need a byte that has no token? (Only imported vocabularies lack any.)"""
        if not self._missing:
            return False
        return self._lacks_bytes(text.encode("utf-8", errors="surrogatepass"))

    def _bpe(self, data: bytes) -> list[int]:
        """Byte pair encoding of one chunk: apply the earliest-learned merge until none applies."""
        if not data:
            return []
        ids = [self._byte_ids[b] for b in data]
        no_merge = (len(self._merges), -1)
        while len(ids) >= 2:
            # the adjacent pair whose merge was learned first
            pair = min(zip(ids, ids[1:]), key=lambda p: self._merge_rank.get(p, no_merge))
            if pair not in self._merge_rank:
                break
            new_id = self._merge_rank[pair][1]
            # replace every occurrence, left to right
            merged, i = [], 0
            while i < len(ids):
                if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
                    merged.append(new_id)
                    i += 2
                else:
                    merged.append(ids[i])
                    i += 1
            ids = merged
        return ids

    def _split_specials(self, text: str, allowed: set[str]):
        """Yield (piece, is_special): the text cut at occurrences of the allowed special tokens."""
        for _, piece, is_special in self._specials.split(text, allowed):
            yield piece, is_special

    def _fast_encoder(self):
        if self._fast is None:
            self._fast = build_fast_encoder(
                f"groklm-bpe-{self._vocab_size}",
                self.pattern,
                self._byte_ids,
                self._merges,
                {i: b for i, b in enumerate(self._table) if b is not None},
                self._extra_ids,
                self.special_tokens,
            )
        return self._fast

    def to_tiktoken(self):
        """A `tiktoken.Encoding` built from the same merges, giving the same ids as `encode`."""
        fast = self._fast_encoder()
        if fast.rank_to_id is not None:
            raise TokenizerError(
                "this vocabulary numbers its tokens out of merge order (an imported one), which a "
                "tiktoken Encoding cannot express; use this tokenizer's encode() instead"
            )
        return fast.encoding

    # --- decoding and inspection --------------------------------------------------------------
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return decode_with_table(self._decode_table, ids)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (a special token's are its UTF-8 text)."""
        return table_lookup(self._table, token_id)

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def merges(self) -> list[tuple[int, int, int]]:
        """(left id, right id, new id) in the order they were learned."""
        return list(self._merges)

    # --- the file -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        identity = self._byte_ids == list(range(256))
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "type": self.type,
            "pattern": self.pattern,
            "special_tokens": self.special_tokens,
            "byte_ids": None if identity else self._byte_ids,
            **({"unk_id": self.unk_id, "fuse_unk": self.fuse_unk} if self.unk_id is not None else {}),
            "extra_tokens": {str(i): self._table[i].hex() for i in self._extra_ids},
            # [left, right, new id, text of the new token (for people; ignored when loading)]
            "merges": [[a, b, c, self._table[c].decode("utf-8", errors="backslashreplace")] for a, b, c in self._merges],
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> Tokenizer:
        check_header(data, source, cls.type)
        merges = data.get("merges")
        if not isinstance(merges, list) or not all(isinstance(m, list) and len(m) >= 3 for m in merges):
            raise TokenizerError(f"{source} is corrupt: 'merges' must be a list of [left, right, id, text]")
        extra = data.get("extra_tokens") or {}
        try:
            extra_tokens = {int(k): bytes.fromhex(v) for k, v in extra.items()}
        except (AttributeError, ValueError, TypeError):
            raise TokenizerError(f"{source} is corrupt: 'extra_tokens' must map ids to hex strings") from None
        pattern = data.get("pattern")
        if not isinstance(pattern, str):
            raise TokenizerError(f"{source} is corrupt: 'pattern' is missing")
        if not isinstance(data.get("special_tokens"), dict):
            raise TokenizerError(f"{source} is corrupt: 'special_tokens' is missing")
        return cls(
            [m[:3] for m in merges],
            pattern=pattern,
            special_tokens=data.get("special_tokens"),
            byte_ids=data.get("byte_ids"),
            extra_tokens=extra_tokens,
            unk_id=data.get("unk_id"),
            fuse_unk=bool(data.get("fuse_unk", False)),
            source=source,
        )

    def __getstate__(self):  # pickle (e.g. to worker processes) without the tiktoken object
        state = self.__dict__.copy()
        state["_fast"] = None
        state["_cache"] = {}
        return state


def check_header(data: dict, source: str, expected_type: str) -> None:
    if data.get("format") != FORMAT:
        hint = " (it looks like a Hugging Face tokenizer.json: use load_tokenizer or `groklm tokenizer import`)" if "model" in data else ""
        raise TokenizerError(f"{source} is not a groklm tokenizer file{hint}")
    if data.get("version") != FORMAT_VERSION:
        raise TokenizerError(f"{source} has format version {data.get('version')!r}; this groklm reads version {FORMAT_VERSION}")
    if data.get("type") != expected_type:
        raise TokenizerError(f"{source} is a {data.get('type')!r} tokenizer, not {expected_type!r}")


def _check_text(text) -> str:
    if not isinstance(text, str):
        raise TokenizerError(f"can only encode str, not {type(text).__name__}")
    return text
