"""Constrained decoding: make the model's output match a regular expression or a JSON schema.

A language model can write anything; a program reading its output needs, say, a JSON object
with the right keys. Instead of hoping, we mask the logits: at every step only tokens that
keep the text a prefix of some string in the target language may be sampled, and the reply may
end only where the language allows it. The output then parses, every time.

    JSON schema --(schema_regex)--> regex --(llguidance)--> a mask over *tokens* at each step

The hard part is the last arrow: tokens are multi-byte pieces, so at every step we need the set
of tokens whose bytes keep the text inside the language. llguidance (the Rust engine behind
Guidance, also used by vLLM, SGLang and llama.cpp) does it lazily: it builds the automaton's
states only as the reply reaches them and walks the tokenizer's byte trie from the current
state, tens of microseconds per token. We used outlines-core before, which builds the whole
(state x vocabulary) index up front: a schema property with `pattern: "[^\\n]{1,400}"` made
it build a multi-gigabyte index with no way to stop it (the measurements are in
benchmarks/grammar_engines.py). xgrammar, the other candidate, needs triton and transformers
(~1 GB) at run time.

Everything a grammar may cost is bounded (`GrammarLimits`): the regex's size, the work of
compiling it, the work of each step's mask, the automaton states one reply may build, and the
memory the cache of compiled grammars may hold. Going over a limit is a ConfigError that says
which limit and how to raise it; a server answers it with a 400. Compiling takes milliseconds
(about a second for the worst we found within the default limits), so a request whose client
left cannot leave a runaway compile behind.

Whitespace between JSON tokens is limited to at most one blank, so a small model cannot
wander off into endless spaces and newlines.

In the engine a batch's masks are one `MaskBatch`: every row's is written into one int32
bitmask, unpacked and applied to all rows' logits at once (done row by row, the conversions
and the masking had cost several times llguidance's own work). Costly masks (a large
vocabulary) are computed by a worker thread while the model's forward pass runs; llguidance
releases the GIL.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from llguidance import LLMatcher, LLParserLimits, LLTokenizer, TokenizerWrapper

from groklm.errors import ConfigError, TokenizerError
from groklm.infer.schema_regex import MAX_CHARS, schema_regex
from groklm.tokenizer.base import BaseTokenizer
from groklm.tokenizer.chat import reply_end_id

# The defaults serve every schema of benchmarks/schemas.py with room to spare and keep the
# worst request to about a second of compiling and a few hundred MB (measured with
# benchmarks/grammar_engines.py on the 49152-token SmolLM2 vocabulary). "Fuel" is llguidance's unit of
# lexer work: its docs give ~50k per ms; on pathological patterns (`(a{1000}){1000}`) we
# measured ~0.5-1k per ms, so the fuel limits, not the docs' rates, are what bound the time.
MAX_REGEX_CHARS = MAX_CHARS  # the compiled regex's text: 500k (a 2000-property object is ~155k)
COMPILE_FUEL = 500_000  # llguidance's initial lexer fuel: the worst pattern we found took ~1 s
STEP_FUEL = 500_000  # lexer fuel for one token's mask: medians 50-300 µs, the slowest step seen ~70 ms
MAX_LEXER_STATES = 100_000  # automaton states one reply may build, ~1 kB each: ~100 MB
CACHE_MB = 256.0  # compiled grammars kept for reuse, least recently used evicted first
BYTES_PER_REGEX_CHAR = 32  # a compiled grammar's memory per character of its regex (measured)


@dataclass(frozen=True)
class GrammarLimits:
    """What compiling and following one grammar may cost. `groklm serve --grammar-*` sets them
    for a server (`configure`); each field names the flag that raises it in its errors."""

    max_regex_chars: int = MAX_REGEX_CHARS
    compile_fuel: int = COMPILE_FUEL
    step_fuel: int = STEP_FUEL
    max_states: int = MAX_LEXER_STATES
    cache_mb: float = CACHE_MB

    def __post_init__(self):
        for name in ("max_regex_chars", "compile_fuel", "step_fuel", "max_states"):
            if getattr(self, name) < 1:
                raise ConfigError(f"grammar limit {name} must be >= 1, got {getattr(self, name)}")
        if self.cache_mb < 0:
            raise ConfigError(f"grammar cache_mb must be >= 0, got {self.cache_mb}")

    def parser_limits(self) -> LLParserLimits:
        # verbose_errors off: llguidance would put the reply so far and the grammar in the message
        return LLParserLimits(initial_lexer_fuel=self.compile_fuel, step_lexer_fuel=self.step_fuel,
                              max_lexer_states=self.max_states, verbose_errors=False)


# What each of llguidance's limit messages means, and the flag that raises that limit.
_LIMIT_MESSAGES = {
    "initial lexer configuration (grammar) too big": ("compiling it needs more work than the limit", "--grammar-compile-fuel"),
    "too many states": ("following it needs more automaton states than the limit", "--grammar-max-states"),
    # the work of one token's mask, or, for the first mask, of building the automaton's start
    "too many expressions constructed": ("building its automaton needs more work than the limit",
                                         "--grammar-step-fuel, or --grammar-compile-fuel for the first token"),
}


def _refusal(pattern: str, error: str) -> ConfigError:
    """A ConfigError for llguidance's `error` on `pattern`: which limit, or what is wrong."""
    error = error.replace("\n<non-verbose/>", "").strip()
    for needle, (what, flag) in _LIMIT_MESSAGES.items():
        if needle in error:
            return ConfigError(f"the constraint is too large: {what} ({error}); simplify the schema or regex, "
                               f"or raise the limit (groklm serve {flag}, GrammarLimits in Python)")
    if error.startswith("NoExtension"):
        return ConfigError(f"the constraint {pattern[:80]!r} matches no text this tokenizer can write")
    return ConfigError(f"cannot compile the constraint {pattern[:80]!r}: {error}")


class _Vocabulary:
    """What llguidance reads of a tokenizer: every id's bytes, the specials, an encoder. Special
    tokens are marked so their text never counts as ordinary text; the end of a constrained
    reply is the eos llguidance allows where the language may end.

    The encoder matters where the grammar forces text (a property name): llguidance then offers
    only the tokens our tokenizer would write it with, so the model stays on the tokenization
    it was trained on."""

    def __init__(self, tokenizer: BaseTokenizer, eos_id: int):
        self.eos_token_id = eos_id
        self.bos_token_id = None
        self.special_token_ids = sorted(set(tokenizer.special_tokens.values()))
        self.tokens = [self._bytes(tokenizer, token_id) for token_id in range(tokenizer.vocab_size)]
        self._tokenizer = tokenizer
        specials = set(self.special_token_ids)
        self._ids = {piece: i for i, piece in enumerate(self.tokens) if piece and i not in specials}
        self._longest = max(map(len, self._ids), default=1)

    @staticmethod
    def _bytes(tokenizer: BaseTokenizer, token_id: int) -> bytes:
        try:
            return tokenizer.token_bytes(token_id)
        except TokenizerError:
            return b""  # a hole in an imported vocabulary: no bytes, so never allowed

    def __call__(self, text: bytes) -> list[int]:
        """Ids whose bytes are exactly `text`: our tokenizer's, unless it writes something else
        (a SentencePiece-style tokenizer adds a leading "▁"), then the longest pieces first."""
        try:
            ids = self._tokenizer.encode(text.decode("utf-8"))
            if b"".join(self.tokens[i] for i in ids) == text:
                return ids
        except (UnicodeDecodeError, TokenizerError):
            pass
        ids, start = [], 0
        while start < len(text):
            end = min(len(text), start + self._longest)
            while end > start and text[start:end] not in self._ids:
                end -= 1
            if end == start:  # a byte no token holds: the grammar cannot produce it either
                break
            ids.append(self._ids[text[start:end]])
            start = end
        return ids


# One llguidance view per tokenizer (~0.1 s to build for 49k tokens), gone with the tokenizer.
_VOCABULARIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lock = threading.Lock()  # servers compile in worker threads


def _llg_tokenizer(tokenizer: BaseTokenizer, eos_id: int) -> LLTokenizer:
    with _lock:
        found = _VOCABULARIES.get(tokenizer)
    if found is None or found[0] != eos_id:
        found = (eos_id, LLTokenizer(TokenizerWrapper(_Vocabulary(tokenizer, eos_id))))
        with _lock:
            _VOCABULARIES[tokenizer] = found
    return found[1]


class GrammarCache:
    """Compiled grammars by (vocabulary, regex, parser limits), least recently used evicted first once
    their estimated memory passes the budget. A grammar bigger than the whole budget is
    compiled for its request and not kept."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self.bytes = 0
        self._entries: OrderedDict[tuple, tuple[LLTokenizer, LLMatcher, int]] = OrderedDict()

    @staticmethod
    def _key(vocabulary: LLTokenizer, pattern: str, limits: GrammarLimits) -> tuple:
        # only the limits the compiled matcher carries: a new cache budget keeps the entries
        return id(vocabulary), pattern, limits.compile_fuel, limits.step_fuel, limits.max_states

    def get(self, vocabulary: LLTokenizer, pattern: str, limits: GrammarLimits) -> LLMatcher | None:
        key = self._key(vocabulary, pattern, limits)
        with _lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] is not vocabulary:  # the entry keeps its vocabulary alive
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, vocabulary: LLTokenizer, pattern: str, limits: GrammarLimits, matcher: LLMatcher) -> None:
        key, cost = self._key(vocabulary, pattern, limits), cost_bytes(pattern)
        with _lock:
            old = self._entries.pop(key, None)
            self.bytes -= old[2] if old else 0
            if cost <= self.budget_bytes:
                self._entries[key] = (vocabulary, matcher, cost)
                self.bytes += cost
            self._evict()

    def resize(self, budget_bytes: int) -> None:
        with _lock:
            self.budget_bytes = budget_bytes
            self._evict()

    def _evict(self) -> None:
        while self.bytes > self.budget_bytes:
            self.bytes -= self._entries.popitem(last=False)[1][2]

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with _lock:
            self._entries.clear()
            self.bytes = 0


def cost_bytes(pattern: str) -> int:
    """The estimated memory of a compiled grammar (its regex's parsed form dominates)."""
    return 65536 + BYTES_PER_REGEX_CHAR * len(pattern)


_limits = GrammarLimits()
CACHE = GrammarCache(int(_limits.cache_mb * 2**20))


def configure(limits: GrammarLimits) -> None:
    """Set the limits of every grammar compiled from now on in this process (the cache's
    budget included: memory is the process's)."""
    global _limits
    _limits = limits
    CACHE.resize(int(limits.cache_mb * 2**20))


class Grammar:
    """A regular language compiled for one tokenizer. Share it between requests; each request
    walks it with its own `GrammarState` (from `start()`)."""

    def __init__(self, pattern: str, tokenizer: BaseTokenizer, limits: GrammarLimits | None = None):
        self.pattern = pattern
        self.limits = limits or _limits
        self.eos_id = reply_end_id(tokenizer)  # a constrained reply ends like any chat reply (ChatML: <|im_end|>)
        if len(pattern) > self.limits.max_regex_chars:
            raise ConfigError(f"the constraint is too large: its regex has {len(pattern)} characters, over the limit of "
                              f"{self.limits.max_regex_chars}; simplify the schema or regex, or raise the limit "
                              f"(groklm serve --grammar-max-chars, GrammarLimits in Python)")
        self.vocabulary = _llg_tokenizer(tokenizer, self.eos_id)
        self.vocab_size = tokenizer.vocab_size
        matcher = CACHE.get(self.vocabulary, pattern, self.limits)
        if matcher is None:
            matcher = LLMatcher(self.vocabulary, LLMatcher.grammar_from_regex(pattern), log_level=0,
                                limits=self.limits.parser_limits())
            # The first mask finds what compiling alone does not: a language with no text at all.
            _mask(matcher, np.zeros(_words(self.vocab_size), dtype=np.int32))
            if matcher.is_error():
                raise _refusal(pattern, matcher.get_error())
            CACHE.put(self.vocabulary, pattern, self.limits, matcher)
        self._matcher = matcher

    @classmethod
    def from_regex(cls, pattern: str, tokenizer: BaseTokenizer, limits: GrammarLimits | None = None) -> Grammar:
        return cls(pattern, tokenizer, limits)

    @classmethod
    def from_json_schema(cls, schema: dict | str, tokenizer: BaseTokenizer, limits: GrammarLimits | None = None) -> Grammar:
        """The language of JSON documents that validate against `schema` (a dict or its JSON
        text), properties in the schema's order, numeric bounds included (see schema_regex).
        An impossible schema (`minimum` > `maximum`, an empty `enum`) is a ConfigError."""
        chosen = limits or _limits
        return cls(schema_regex(schema, max_chars=chosen.max_regex_chars), tokenizer, limits)

    def start(self) -> GrammarState:
        return GrammarState(self)


def _words(vocab_size: int) -> int:
    return (vocab_size + 31) // 32


def _mask(matcher: LLMatcher, words: np.ndarray) -> None:
    matcher.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)


def _unpack(bits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(rows, words) int32 bitmasks -> (rows, vocab_size) bool. Bit j of word w says whether
    token 32 * w + j is allowed (little-endian words and bits)."""
    unpacked = np.unpackbits(bits.numpy().view(np.uint8), axis=1, bitorder="little")[:, :vocab_size]
    return torch.from_numpy(unpacked.view(np.bool_))  # the bytes are 0 or 1: a bool view, no copy


class GrammarState:
    """Where one reply is in the language: which tokens may come next, and whether it may end."""

    def __init__(self, grammar: Grammar):
        self.grammar = grammar
        self.matcher = grammar._matcher.deep_copy()  # cheap: the compiled grammar is shared
        self.words = _words(grammar.vocabulary.vocab_size)  # llguidance writes exactly this many

    def allowed(self, vocab_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(vocab_size,) bool: the tokens that keep the text inside the language (eos where it
        may end). A ConfigError when this step would go over a limit of the grammar."""
        bits = torch.zeros((1, max(self.words, _words(vocab_size))), dtype=torch.int32)
        self._fill(bits.data_ptr())
        return _unpack(bits, vocab_size)[0].to(device)

    def _fill(self, pointer: int) -> None:
        """Write this step's bitmask (`self.words` int32 words) at `pointer`."""
        self.matcher.unsafe_compute_mask_ptr(pointer, 4 * self.words)
        if self.matcher.is_error():
            raise _refusal(self.grammar.pattern, self.matcher.get_error())

    def advance(self, token_id: int) -> None:
        if token_id == self.grammar.eos_id:  # eos ends the reply; the language has nowhere to go
            return
        if not self.matcher.consume_token(token_id):
            raise _refusal(self.grammar.pattern, self.matcher.get_error() or f"token {token_id} is not allowed here")

    @property
    def complete(self) -> bool:
        """The text so far is a whole member of the language (the reply may end here)."""
        return self.matcher.is_accepting()


# One thread computes the masks of every engine's batches: llguidance releases the GIL while it
# walks the token trie, so the masks are ready by the time the model's forward pass ends.
# A pool of llguidance's own (LLExecutor) costs more to hand a batch to than a batch's masks take.
def _start_mask_thread() -> None:
    global _MASK_THREAD
    _MASK_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="groklm-grammar-masks")


_start_mask_thread()
os.register_at_fork(after_in_child=_start_mask_thread)  # a forked child has no copy of the thread


class MaskBatch:
    """The next token's mask for every row of a batch, applied to all rows in one tensor
    operation. Costly masks are started at once in a worker thread, so they overlap the forward
    pass that makes the logits; cheap ones are computed by `apply`. A row without a grammar
    allows everything. A row whose grammar fails (a limit, a bug) has its error in
    `errors[row]`, for the engine to end that request alone.

    A state that is not a GrammarState but has its `allowed` (a stand-in in tests) gives its
    row that way."""

    # Handing a batch to the worker (waking it, then sharing the GIL with it) cost 20-100 µs on
    # a busy 2-core machine, more than a 4096-token vocabulary's masks (5-20 µs a row); a
    # 49k-token vocabulary's take 50-300 µs a row.
    HANDOFF_SECONDS = 1e-4
    recent_seconds = 0.0  # what the latest batches' masks took, a moving average

    def __init__(self, states: list[GrammarState | None], vocab_size: int):
        self.vocab_size = vocab_size
        words = max([_words(vocab_size), *(s.words for s in states if isinstance(s, GrammarState))])
        self._bits = torch.zeros((len(states), words), dtype=torch.int32)
        for row, state in enumerate(states):
            if state is None:
                self._bits[row] = -1
        self._rows: dict[int, torch.Tensor] = {}  # the stand-ins' rows
        self.errors: dict[int, Exception] = {}
        self._states = states
        # Whoever comes first computes the masks: the worker, or `apply` when the worker has not
        # started yet (a busy machine may not run it before the forward pass ends).
        self._claim = threading.Lock()
        self._done = threading.Event()
        if MaskBatch.recent_seconds > self.HANDOFF_SECONDS:
            _MASK_THREAD.submit(self._compute)

    def _compute(self) -> None:
        if not self._claim.acquire(blocking=False):
            return
        base, row_bytes, start = self._bits.data_ptr(), 4 * self._bits.shape[1], time.perf_counter()
        try:
            for row, state in enumerate(self._states):
                try:
                    if isinstance(state, GrammarState):
                        state._fill(base + row * row_bytes)
                    elif state is not None:
                        self._rows[row] = state.allowed(self.vocab_size)
                except Exception as exc:  # noqa: BLE001 - one request's grammar must not fail the batch
                    self.errors[row] = exc
        finally:
            MaskBatch.recent_seconds = 0.8 * MaskBatch.recent_seconds + 0.2 * (time.perf_counter() - start)
            self._done.set()

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """(rows, vocab_size) float32 logits, -inf where a row's grammar forbids the token."""
        self._compute()
        self._done.wait()
        allowed = _unpack(self._bits, self.vocab_size)
        for row, mask in self._rows.items():
            allowed[row] = mask
        allowed = allowed.to(logits.device)
        return torch.where(allowed, logits[:, : self.vocab_size].float(), float("-inf"))
