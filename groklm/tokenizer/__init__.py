"""Tokenization: byte-level BPE (`Tokenizer`), a character vocabulary (`CharTokenizer`),
SentencePiece-style BPE for imported models (`MetaspaceTokenizer`), SentencePiece's other model
(`UnigramTokenizer`), and `load_tokenizer(dir)` for any of them. See docs/guide.md, "Tokenization"."""

from groklm.tokenizer.base import (
    DEFAULT_SPECIAL_TOKENS,
    ENDOFTEXT,
    IM_END,
    IM_START,
    BaseTokenizer,
    Conventions,
    StreamDecoder,
)
from groklm.tokenizer.bpe import GPT2_PATTERN, GPT4_PATTERN, PATTERNS, SMOLLM_PATTERN, Tokenizer
from groklm.tokenizer.char import CharTokenizer
from groklm.tokenizer.load import load_tokenizer
from groklm.tokenizer.metaspace import MetaspaceTokenizer
from groklm.tokenizer.unigram import UnigramTokenizer

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
    "MetaspaceTokenizer",
    "PATTERNS",
    "SMOLLM_PATTERN",
    "StreamDecoder",
    "Tokenizer",
    "UnigramTokenizer",
    "load_tokenizer",
]
