"""Tokenization: byte-level BPE (`Tokenizer`), a character vocabulary (`CharTokenizer`), and
`load_tokenizer(dir)` for either. See docs/guide.md, "Tokenization"."""

from groklm.tokenizer.base import (
    DEFAULT_SPECIAL_TOKENS,
    ENDOFTEXT,
    IM_END,
    IM_START,
    BaseTokenizer,
    Conventions,
    StreamDecoder,
)
from groklm.tokenizer.bpe import GPT2_PATTERN, GPT4_PATTERN, PATTERNS, Tokenizer
from groklm.tokenizer.char import CharTokenizer
from groklm.tokenizer.load import load_tokenizer

__all__ = [
    "BaseTokenizer",
    "CharTokenizer",
    "Conventions",
    "DEFAULT_SPECIAL_TOKENS",
    "ENDOFTEXT",
    "GPT2_PATTERN",
    "GPT4_PATTERN",
    "IM_END",
    "IM_START",
    "PATTERNS",
    "StreamDecoder",
    "Tokenizer",
    "load_tokenizer",
]
