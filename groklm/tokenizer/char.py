"""`CharTokenizer`: nanoGPT's character vocabulary, for tiny experiments.

The vocabulary is the sorted list of distinct characters of the corpus (id = position), then
the special tokens. There is no fallback: a character the corpus never had cannot be encoded.
"""

from __future__ import annotations

from collections.abc import Iterable

import regex
from tqdm.auto import tqdm

from groklm.errors import DataError, TokenizerError
from groklm.tokenizer.base import (
    FORMAT,
    FORMAT_VERSION,
    REPLACEMENT,
    BaseTokenizer,
    check_new_specials,
    check_special_tokens,
    decode_with_table,
)
from groklm.tokenizer.bpe import check_header
from groklm.tokenizer.corpus import iter_texts


class CharTokenizer(BaseTokenizer):
    type = "char"

    def __init__(self, chars: Iterable[str], special_tokens: dict[str, int] | Iterable[str] | None = None, source: str = "chars"):
        self.chars = list(chars)
        if not all(isinstance(c, str) and len(c) == 1 for c in self.chars) or len(set(self.chars)) != len(self.chars):
            raise TokenizerError(f"invalid char tokenizer ({source}): 'chars' must be distinct single characters")
        self._stoi = {c: i for i, c in enumerate(self.chars)}
        if special_tokens is None or not isinstance(special_tokens, dict):
            names = check_new_specials(special_tokens)
            special_tokens = {name: len(self.chars) + k for k, name in enumerate(names)}
        self.special_tokens = check_special_tokens(special_tokens, source)
        if any(i < len(self.chars) for i in self.special_tokens.values()):
            raise TokenizerError(f"invalid char tokenizer ({source}): special token ids must come after the characters")
        self._vocab_size = max(self.special_tokens.values()) + 1
        self._decode_table = [c.encode("utf-8", errors="surrogatepass") for c in self.chars]
        self._decode_table += [REPLACEMENT] * (self._vocab_size - len(self.chars))
        for text, token_id in self.special_tokens.items():
            self._decode_table[token_id] = text.encode("utf-8")

    @classmethod
    def train(cls, text_or_inputs, special_tokens: Iterable[str] | None = None, progress: bool = False,
              errors: str = "strict") -> CharTokenizer:
        """The distinct characters of a corpus: a `str` of text, a `pathlib.Path`, or an iterable of them."""
        seen: set[str] = set()
        for text in tqdm(iter_texts(text_or_inputs, errors), desc="reading", unit="block", disable=not progress):
            seen.update(text)
        if not seen:
            raise DataError("the training corpus is empty: no characters to build a vocabulary from")
        return cls(sorted(seen), special_tokens)

    def encode(self, text: str, allowed_special: Iterable[str] | str = ()) -> list[int]:
        if not isinstance(text, str):
            raise TokenizerError(f"can only encode str, not {type(text).__name__}")
        allowed = self._allowed(allowed_special) if allowed_special else set()
        if not allowed:
            return self._encode_chars(text, 0)
        pattern = "|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True))
        ids: list[int] = []
        start = 0
        for match in regex.finditer(pattern, text):
            ids += self._encode_chars(text[start : match.start()], start)
            ids.append(self.special_tokens[match.group()])
            start = match.end()
        return ids + self._encode_chars(text[start:], start)

    def _encode_chars(self, text: str, offset: int) -> list[int]:
        stoi = self._stoi
        try:
            return [stoi[c] for c in text]
        except KeyError as e:
            char = e.args[0]
            where = offset + text.index(char)
            raise TokenizerError(
                f"character {char!r} (U+{ord(char):04X}, at position {where}) is not in this character "
                f"vocabulary of {len(self.chars)} characters; train the CharTokenizer on text that contains it, "
                "or use a byte-level BPE Tokenizer, which can encode any text"
            ) from None

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return decode_with_table(self._decode_table, ids)

    def decode(self, ids: Iterable[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        if type(token_id) is not int or not 0 <= token_id < self._vocab_size:
            raise TokenizerError(f"{token_id!r} is not a token id of this tokenizer (vocab size {self._vocab_size})")
        return self._decode_table[token_id]

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "type": self.type,
            "special_tokens": self.special_tokens,
            "chars": self.chars,
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> CharTokenizer:
        check_header(data, source, cls.type)
        if not isinstance(data.get("chars"), list) or not isinstance(data.get("special_tokens"), dict):
            raise TokenizerError(f"{source} is corrupt: 'chars' (a list) and 'special_tokens' are required")
        return cls(data["chars"], data["special_tokens"], source=source)
