"""Constrained decoding: make the model's output match a regular expression or a JSON schema.

A language model can write anything; a program reading its output needs, say, a JSON object
with the right keys. Instead of hoping, we mask the logits: at every step only tokens that
keep the text a prefix of some string in the target language may be sampled, and the reply may
end only where the language allows it. The output then parses, every time.

    JSON schema --(outlines-core)--> regex --> DFA over characters --> index over *tokens*

The hard part is the last arrow: tokens are multi-byte pieces, so for every automaton state
we need the set of tokens whose bytes walk the automaton to another live state. outlines-core
(a small Rust library, used by vLLM and TGI) builds that index once per (regex, vocabulary);
we give it our vocabulary as raw bytes. We chose it over xgrammar, which handles more
(recursive schemas) but requires triton and transformers (~1 GB) at run time.

Whitespace between JSON tokens is limited to at most one blank, so a small model cannot
wander off into endless spaces and newlines.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch
from outlines_core import Guide, Index, Vocabulary

from groklm.errors import ConfigError, TokenizerError
from groklm.infer.schema_regex import schema_regex
from groklm.tokenizer.base import BaseTokenizer
from groklm.tokenizer.chat import reply_end_id

# Building an index walks the whole vocabulary through the automaton (milliseconds to
# seconds); the same schema is usually asked for again and again, so keep them per tokenizer.
_INDEXES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _vocabulary(tokenizer: BaseTokenizer, eos_id: int):
    """outlines-core's view of our vocabulary: the bytes of every ordinary token -> its ids."""
    specials = set(tokenizer.special_tokens.values())
    by_bytes: dict[bytes, list[int]] = {}
    for token_id in range(tokenizer.vocab_size):
        if token_id in specials:
            continue  # never part of constrained text; the end of the reply is eos, added below
        try:
            by_bytes.setdefault(tokenizer.token_bytes(token_id), []).append(token_id)
        except TokenizerError:
            continue  # a hole in an imported vocabulary
    return Vocabulary(eos_id, by_bytes)


class Grammar:
    """A regular language compiled for one tokenizer. Share it between requests; each request
    walks it with its own `GrammarState` (from `start()`)."""

    def __init__(self, pattern: str, tokenizer: BaseTokenizer):
        self.pattern = pattern
        self.eos_id = reply_end_id(tokenizer)  # a constrained reply ends like any chat reply (ChatML: <|im_end|>)
        cached = _INDEXES.setdefault(tokenizer, {})
        if pattern not in cached:
            try:
                cached[pattern] = Index(pattern, _vocabulary(tokenizer, self.eos_id))
            except (ValueError, RuntimeError) as exc:  # outlines-core's errors for bad/unmatchable patterns
                raise ConfigError(f"cannot compile the constraint {pattern[:80]!r}: {exc}") from exc
        self.index = cached[pattern]

    @classmethod
    def from_regex(cls, pattern: str, tokenizer: BaseTokenizer) -> Grammar:
        return cls(pattern, tokenizer)

    @classmethod
    def from_json_schema(cls, schema: dict | str, tokenizer: BaseTokenizer) -> Grammar:
        """The language of JSON documents that validate against `schema` (a dict or its JSON
        text), properties in the schema's order, numeric bounds included (see schema_regex)."""
        try:
            pattern = schema_regex(schema)
        except (ValueError, TypeError, RuntimeError) as exc:  # includes malformed JSON text
            raise ConfigError(f"unsupported JSON schema: {exc}") from exc
        return cls(pattern, tokenizer)

    def start(self) -> GrammarState:
        return GrammarState(self)


class GrammarState:
    """Where one reply is in the automaton: which tokens may come next, and whether it may end."""

    def __init__(self, grammar: Grammar):
        self.grammar = grammar
        self.guide = Guide(grammar.index)

    def allowed(self, vocab_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(vocab_size,) bool: the tokens that keep the text inside the language (eos where it may end)."""
        words = np.zeros((vocab_size + 31) // 32, dtype=np.int32)
        self.guide.write_mask_into(words.ctypes.data, words.size, words.itemsize)
        # Bit j of word w says whether token 32 * w + j is allowed (little-endian words and bits).
        bits = np.unpackbits(words.view(np.uint8), bitorder="little")[:vocab_size]
        return torch.from_numpy(bits.astype(bool)).to(device)

    def advance(self, token_id: int) -> None:
        if token_id != self.grammar.eos_id:  # eos ends the reply; the automaton has nowhere to go
            self.guide.advance(token_id, return_tokens=False)

    @property
    def complete(self) -> bool:
        """The text so far is a whole member of the language (the reply may end here)."""
        return self.guide.is_finished()
