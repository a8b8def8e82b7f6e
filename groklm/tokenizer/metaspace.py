"""`MetaspaceTokenizer`: SentencePiece-style BPE over characters, as Llama 2, Mistral and TinyLlama use.

Byte-level BPE (bpe.py) works on bytes and never meets an unknown symbol. SentencePiece's BPE
works on *characters*: a space is written "▁" (U+2581) and glued to the word after it, a word
at the start of the text gets one too (the "prefix space"), and a character the vocabulary
lacks falls back to its UTF-8 bytes spelled as the tokens `<0x00>`..`<0xFF>`.

How text becomes ids (what the Hugging Face `tokenizers` library does with such a
tokenizer.json, which the tests check on many strings):
1. If the caller allowed some special tokens, cut the text at them; each becomes its own id.
2. Each remaining piece gets its prefix and its spaces respelled, by one of:
   - "normalizer": "▁" before every piece, then every " " -> "▁" (a Prepend + Replace
     normalizer: Llama 2, Mistral, TinyLlama);
   - "first" / "always": " " -> "▁", then "▁" before the piece unless it already starts with
     one ("first": only the piece at the very start of the text) (the Metaspace pre-tokenizer);
   - "never": only the respelling.
   With `split`, the piece is then cut before every "▁" (one word per space); otherwise the
   whole piece is one word.
3. Each word becomes one symbol per character (its `<0xXX>` byte tokens when the character is
   not in the vocabulary and `byte_fallback` is on, else the unknown token, else nothing), and
   the merges are applied lowest rank first, leftmost first, one at a time (a heap).

Decoding reverses the respelling ("▁" -> " ", byte tokens -> their bytes) and drops the one
space the prefix added at the start of the output.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

from groklm.errors import TokenizerError
from groklm.tokenizer.base import (
    FORMAT,
    FORMAT_VERSION,
    REPLACEMENT,
    BaseTokenizer,
    SpecialSplitter,
    StreamDecoder,
    check_special_tokens,
    decode_with_table,
    is_id,
    table_lookup,
)

SPACE = "\u2581"  # "▁", SentencePiece's visible space
PREFIX_SCHEMES = ("normalizer", "first", "always", "never")
_CACHE_LIMIT = 100_000  # words remembered
_CACHE_WORD = 64  # longest word remembered


def byte_token(b: int) -> str:
    """SentencePiece's name for the byte fallback token of byte `b`: `<0x0A>` for newline."""
    return f"<0x{b:02X}>"


class MetaspaceTokenizer(BaseTokenizer):
    """BPE over characters with "▁" for spaces and byte fallback. Built by an import (imports.py)."""

    type = "metaspace"

    def __init__(
        self,
        vocab: dict[str, int],
        merges: Sequence[Sequence[str]],
        *,
        special_tokens: dict[str, int],
        prefix: str = "first",
        split: bool = False,
        byte_fallback: bool = True,
        unk_token: str | None = None,
        fuse_unk: bool = False,
        strip_prefix: bool | None = None,
        source: str = "vocab",
    ):
        """
        vocab: token text (spaces written "▁", bytes as `<0xXX>`) -> id.
        merges: `(left, right)` token texts in priority order; `left + right` must be in `vocab`.
        special_tokens: text -> id; an id may also be the vocabulary entry of the same text.
        prefix: how a piece of text gets its leading "▁" (see the module docstring).
        strip_prefix: decoding drops one leading space (default: when `prefix` adds one).
        """
        bad = f"invalid tokenizer ({source})"
        if prefix not in PREFIX_SCHEMES:
            raise TokenizerError(f"{bad}: prefix must be one of {PREFIX_SCHEMES}, not {prefix!r}")
        if not isinstance(vocab, dict) or not all(isinstance(t, str) and t and is_id(i) for t, i in vocab.items()):
            raise TokenizerError(f"{bad}: the vocabulary must map non-empty strings to ids >= 0")
        if len(set(vocab.values())) != len(vocab):
            raise TokenizerError(f"{bad}: two tokens of the vocabulary share an id")
        self.vocab = dict(vocab)
        self.special_tokens = check_special_tokens(special_tokens, source)
        names = {i: t for t, i in self.vocab.items()}
        clash = [t for t, i in self.special_tokens.items() if i in names and names[i] != t]
        if clash:
            raise TokenizerError(f"{bad}: special tokens {clash} reuse ids of other tokens")
        self.prefix, self.split, self.byte_fallback, self.fuse_unk = prefix, bool(split), bool(byte_fallback), bool(fuse_unk)
        self.strip_prefix = prefix != "never" if strip_prefix is None else bool(strip_prefix)
        self.unk_token = unk_token
        if unk_token is not None and unk_token not in self.vocab and unk_token not in self.special_tokens:
            raise TokenizerError(f"{bad}: the unknown token {unk_token!r} is not in the vocabulary")
        self._unk_id = None if unk_token is None else self.vocab.get(unk_token, self.special_tokens.get(unk_token))

        self.merges: list[tuple[str, str]] = []
        self._merge_rank: dict[tuple[int, int], tuple[int, int]] = {}  # (left, right) -> (rank, new id)
        for rank, merge in enumerate(merges):
            if len(merge) != 2 or not all(isinstance(part, str) for part in merge):
                raise TokenizerError(f"{bad}: merge {rank} is {merge!r}, expected [left, right]")
            left, right = merge
            ids = [self.vocab.get(t) for t in (left, right, left + right)]
            if None in ids:
                raise TokenizerError(f"{bad}: merge {rank} ({left!r}, {right!r}) names a token missing from the vocabulary")
            self.merges.append((left, right))
            self._merge_rank.setdefault((ids[0], ids[1]), (rank, ids[2]))

        self._byte_ids = [self.vocab.get(byte_token(b)) for b in range(256)]
        self._vocab_size = max([*self.vocab.values(), *self.special_tokens.values()], default=-1) + 1
        table: list[bytes | None] = [None] * self._vocab_size
        for text, i in self.vocab.items():
            table[i] = text.replace(SPACE, " ").encode("utf-8")
        for b, i in enumerate(self._byte_ids):
            if i is not None:
                table[i] = bytes([b])
        for text, i in self.special_tokens.items():
            table[i] = text.encode("utf-8")
        self._table = table
        self._decode_table = [REPLACEMENT if data is None else data for data in table]
        self._cache: dict[str, list[int]] = {}
        self._specials = SpecialSplitter()

    # --- encoding ---------------------------------------------------------------------------
    def encode(self, text: str, allowed_special: Iterable[str] | str = ()) -> list[int]:
        """Ids of `text`. Special-token text counts as special only if `allowed_special` says so."""
        return self._encode(text, allowed_special, continued=False)

    def encode_continuation(self, text: str, allowed_special: Iterable[str] | str = ()) -> list[int]:
        """Ids of `text` as the rest of a text: its first piece gets no prefix "▁" (a piece after a
        special token still does, as in a whole text)."""
        return self._encode(text, allowed_special, continued=True)

    def _encode(self, text: str, allowed_special: Iterable[str] | str, continued: bool) -> list[int]:
        if not isinstance(text, str):
            raise TokenizerError(f"can only encode str, not {type(text).__name__}")
        allowed = self._allowed(allowed_special) if allowed_special else set()
        ids: list[int] = []
        for start, piece, is_special in self._specials.split(text, allowed):
            if is_special:
                ids.append(self.special_tokens[piece])
                continue
            opens = not (continued and start == 0)  # does this piece begin a text (or follow a special token)?
            for word in self._words(piece, opens, opens and start == 0):
                cached = self._cache.get(word)
                if cached is None:
                    cached = self._bpe(self._symbols(word))
                    if len(word) <= _CACHE_WORD:  # (without `split`, a word is a whole text)
                        if len(self._cache) >= _CACHE_LIMIT:
                            self._cache.clear()
                        self._cache[word] = cached
                ids.extend(cached)
        return ids

    def _words(self, piece: str, opens: bool, at_start: bool) -> list[str]:
        """Step 2: the piece respelled with "▁" and its prefix, cut into words. `opens`: the piece
        begins a text or follows a special token; `at_start`: it begins the text."""
        if self.prefix == "normalizer" and opens:
            piece = SPACE + piece
        piece = piece.replace(" ", SPACE)
        if (self.prefix == "always" and opens or self.prefix == "first" and at_start) and not piece.startswith(SPACE):
            piece = SPACE + piece
        if not self.split:
            return [piece]
        words, start = [], 0
        for i in range(1, len(piece)):  # cut before each "▁": the space begins the next word
            if piece[i] == SPACE:
                words.append(piece[start:i])
                start = i
        words.append(piece[start:])
        return [w for w in words if w]

    def _symbols(self, word: str) -> list[int]:
        """Step 3, first half: one id per character, byte tokens or the unknown token for the rest."""
        ids: list[int] = []
        unk: int | None = None  # a pending unknown token (fused with the next ones if fuse_unk)
        for char in word:
            token_id = self.vocab.get(char)
            if token_id is not None:
                if unk is not None:
                    ids.append(unk)
                    unk = None
                ids.append(token_id)
                continue
            if self.byte_fallback:
                byte_ids = [self._byte_ids[b] for b in char.encode("utf-8", errors="surrogatepass")]
                if None not in byte_ids:
                    ids.extend(byte_ids)  # (as `tokenizers` does, a pending unknown token stays pending)
                    continue
            if self._unk_id is not None:
                if unk is not None and not self.fuse_unk:
                    ids.append(unk)
                unk = self._unk_id
        if unk is not None:
            ids.append(unk)
        return ids

    def _bpe(self, ids: list[int]) -> list[int]:
        """Step 3, second half: merge the lowest-ranked adjacent pair, leftmost first, until none is left."""
        n = len(ids)
        if n < 2:
            return ids
        ranks = self._merge_rank
        nxt = [*range(1, n), -1]
        prev = list(range(-1, n - 1))
        alive = [True] * n
        heap = [(ranks[pair][0], i) for i, pair in enumerate(zip(ids, ids[1:])) if pair in ranks]
        heapq.heapify(heap)
        while heap:
            rank, i = heapq.heappop(heap)
            j = nxt[i]
            if not alive[i] or j < 0 or ranks.get((ids[i], ids[j]), (None,))[0] != rank:
                continue  # stale: one of the two was merged since this pair was queued
            ids[i] = ranks[(ids[i], ids[j])][1]
            alive[j] = False
            nxt[i] = nxt[j]
            if nxt[j] >= 0:
                prev[nxt[j]] = i
            for left in (prev[i], i):
                right = nxt[left] if left >= 0 else -1
                if left >= 0 and right >= 0 and (ids[left], ids[right]) in ranks:
                    heapq.heappush(heap, (ranks[(ids[left], ids[right])][0], left))
        return [token_id for token_id, keep in zip(ids, alive) if keep]

    # --- decoding and inspection --------------------------------------------------------------
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of `ids`, less the one space that the prefix put at the start."""
        data = self._raw_bytes(ids)
        return data[1:] if self.strip_prefix and data.startswith(b" ") else data

    def _raw_bytes(self, ids: Iterable[int]) -> bytes:
        return decode_with_table(self._decode_table, ids)

    def stream_decoder(self) -> StreamDecoder:
        return _StreamDecoder(self)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token ("▁" as a space; a special token's are its UTF-8 text)."""
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
            "prefix": self.prefix,
            "split": self.split,
            "byte_fallback": self.byte_fallback,
            "unk_token": self.unk_token,
            "fuse_unk": self.fuse_unk,
            "strip_prefix": self.strip_prefix,
            "special_tokens": self.special_tokens,
            "vocab": self.vocab,
            "merges": [list(m) for m in self.merges],
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> MetaspaceTokenizer:
        if data.get("format") != FORMAT or data.get("type") != cls.type:
            raise TokenizerError(f"{source} is not a groklm metaspace tokenizer file")
        if data.get("version") != FORMAT_VERSION:
            raise TokenizerError(f"{source} has format version {data.get('version')!r}; this groklm reads version {FORMAT_VERSION}")
        for key, kind in (("vocab", dict), ("merges", list), ("special_tokens", dict)):
            if not isinstance(data.get(key), kind):
                raise TokenizerError(f"{source} is corrupt: {key!r} is missing")
        return cls(
            data["vocab"],
            [tuple(m) for m in data["merges"]],
            special_tokens=data["special_tokens"],
            prefix=data.get("prefix", "first"),
            split=data.get("split", False),
            byte_fallback=data.get("byte_fallback", True),
            unk_token=data.get("unk_token"),
            fuse_unk=data.get("fuse_unk", False),
            strip_prefix=data.get("strip_prefix"),
            source=source,
        )

    def __getstate__(self):  # pickle without the caches
        state = self.__dict__.copy()
        state["_cache"] = {}
        state["_specials"] = SpecialSplitter()
        return state


class _StreamDecoder(StreamDecoder):
    """Streams like `decode`: only the very first token loses the prefix space."""

    def __init__(self, tokenizer: MetaspaceTokenizer):
        super().__init__(tokenizer)
        self._first = True

    def push(self, token_id: int) -> str:
        data = self._tokenizer._raw_bytes([token_id])
        if self._first and data:
            self._first = False
            if self._tokenizer.strip_prefix and data.startswith(b" "):
                data = data[1:]
        return self._decoder.decode(data)

    def flush(self) -> str:
        self._first = True
        return super().flush()
