"""The inference engine: many requests at once, each token computed once.

    add_request ──► waiting ──(free slot)──► prefill: the prompt in one pass, filling its
                      ▲                      KV-cache slot; sample the first token
                      │ paused      active ◄─ decode: ONE forward pass for every active request,
                      └─(cache full)──┘       each feeding its newest token; sample the next
                    finished ──► slot freed  (stop token, stop string, max_tokens, full context)

Continuous batching: requests join between decode steps (a new one is prefilled and then rides
along in the next batched decode) and leave as soon as they finish, so a long reply never
holds up a short one and the batch stays full while there is work.

The KV cache is a pool of pages sized by a memory budget (cache_mb, `--kv-cache-mb`), not slots
x the model's context (groklm.model.kv_cache). Each step first reserves room for every running
request's next token, oldest first; when the pool is full the newest is paused: its pages go
back, it waits at the front of the line, and when readmitted it computes its prompt and reply
so far again (one prefill) and carries on. A request is refused up front only when it could not
fit the whole pool alone. With prefix caching (on by default) the pages of every prompt are
remembered after its prefill, and a later prompt that starts with the same tokens (a system
prompt, tool descriptions, RAG context, the earlier turns of a chat) shares them and computes
only the rest; remembered pages are dropped least recently used first when the pool needs them,
and all of them whenever the model's weights change.

Sampling is per request (its own temperature, penalties, seed, grammar), row by row after the
batched forward pass; a request's own seeded generator makes its output the same whether it
ran alone or in a batch. The grammars' masks are the exception: a worker thread computes them
all while the forward pass runs, and one tensor operation applies them to the whole batch. A
row that goes wrong (logits that are not numbers, a grammar that allows nothing, a bug in one
request's state) fails that request alone: its last delta carries the error (`Delta.error`)
and the rest of the batch carries on. Text is released only at complete UTF-8 characters, and
text that might be the start of a stop string is held back until it is ruled in or out
(stop_strings.py).

The engine serves GPT models (the KV cache holds attention keys and values); a recurrent run
is refused with a ConfigError. `sample_responses` is the batch sampler that evaluation, on-policy
preference pairs and PPO rollouts share.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Iterator

import torch
import torch.nn.functional as F

from groklm.errors import ConfigError, GroklmError
from groklm.infer.constrain import Grammar, GrammarState, MaskBatch
from groklm.infer.sampling import sample_next
from groklm.infer.stop_strings import StopStrings
from groklm.model.kv_cache import KVCache, bytes_per_token
from groklm.model.quantize import quantize_weights
from groklm.runs import load
from groklm.tokenizer.chat import stop_ids

MAX_STOP_STRINGS = 4
MAX_TOP_LOGPROBS = 20
DEFAULT_CACHE_MB = 512  # KV-cache budget: SmolLM2-135M in float32 (46 KB a position) holds ~11,600 positions


class EngineBusy(GroklmError):
    """Every slot is taken and the waiting line is full: try again later (HTTP 429)."""


@dataclass
class SamplingParams:
    max_tokens: int = 256  # most tokens to generate (the reply also ends at a stop token)
    temperature: float = 1.0  # 0: greedy
    top_k: int | None = None
    top_p: float = 1.0
    frequency_penalty: float = 0.0  # subtract penalty * (times the token already appears in the reply)
    presence_penalty: float = 0.0  # subtract penalty once a token has appeared in the reply at all
    seed: int | None = None  # same seed and prompt -> same reply
    stop: list[str] = field(default_factory=list)  # stop strings, left out of the text
    logprobs: int | None = None  # None: none; k: each token's logprob and the k most likely alternatives

    def validate(self) -> SamplingParams:
        def bad(message: str):
            raise ConfigError(message)

        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            bad(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if not 0.0 <= self.temperature <= 2.0:
            bad(f"temperature must be between 0 and 2, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            bad(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            bad(f"top_k must be a positive integer, got {self.top_k!r}")
        for name in ("frequency_penalty", "presence_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                bad(f"{name} must be between -2 and 2, got {getattr(self, name)}")
        if self.seed is not None and not isinstance(self.seed, int):
            bad(f"seed must be an integer, got {self.seed!r}")
        if len(self.stop) > MAX_STOP_STRINGS or any(not isinstance(s, str) or not s for s in self.stop):
            bad(f"stop takes up to {MAX_STOP_STRINGS} non-empty strings, got {self.stop!r}")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_TOP_LOGPROBS:
            bad(f"top logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {self.logprobs}")
        return self


@dataclass
class TokenLogprob:
    token: str
    token_id: int
    bytes: list[int]
    logprob: float
    top: list[tuple[str, float]] | None = None  # the most likely alternatives at this step


@dataclass
class Delta:
    """What one request produced in one step."""

    request_id: int
    text: str  # new text, complete characters only
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None  # set on a request's last delta: "stop", "length" or "error"
    error: Exception | None = None  # with finish_reason "error": why this request failed (the others did not)


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[TokenLogprob] | None = None


class _Request:
    """One request's state while it is waiting or generating."""

    def __init__(self, request_id: int, prompt: list[int], params: SamplingParams, grammar: Grammar | None, tokenizer):
        self.id = request_id
        self.prompt = prompt
        self.params = params
        self.grammar: GrammarState | None = grammar.start() if grammar is not None else None
        seed = params.seed if params.seed is not None else random.getrandbits(63)
        self.generator = torch.Generator().manual_seed(seed)
        self.decoder = tokenizer.stream_decoder()
        self.slot: int | None = None
        self.generated: list[int] = []
        self.counts: torch.Tensor | None = None  # per-token counts, only when penalties are on
        self.stops = StopStrings(params.stop)  # holds back text that may begin a stop string
        self.pending: list[int] = []  # tokens the next prefill computes (not in the cache yet)
        self.order = 0  # admission order: when the cache is full the newest is paused first


class Engine:
    """Prefill + decode with a KV cache over `max_batch` slots; see the module docstring.

    cache_mb: the KV cache's budget in MiB (None: room for every slot's whole context);
    prefix_cache: share the computed positions of prompts that start alike."""

    def __init__(self, model, tokenizer, max_batch: int = 32, cache_mb: float | None = DEFAULT_CACHE_MB,
                 prefix_cache: bool = True):
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        if cache_mb is not None and not cache_mb > 0:
            raise ConfigError(f"the KV-cache budget (--kv-cache-mb) must be positive, got {cache_mb}")
        if not hasattr(model, "forward_cached"):  # a RecurrentLM has no attention keys and values to cache
            cell = getattr(model.config, "cell", None)
            held = f"a recurrent model ({cell})" if cell else f"a {type(model).__name__}"
            raise ConfigError(f"this run holds {held}; the engine behind chat, serve, eval and the local backend "
                              "serves GPT runs only. Sample from it with `groklm sample`.")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.block_size = model.config.block_size
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.cache_mb = cache_mb
        try:
            self.cache = KVCache(model.config, max_batch, self.device, param.dtype,
                                 None if cache_mb is None else int(cache_mb * 2**20))
        except ConfigError as exc:
            raise ConfigError(f"{exc}: raise --kv-cache-mb") from None
        # The most positions one sequence may hold: the model's context, or less when the cache is smaller.
        self.context = min(self.block_size, self.cache.capacity)
        self.prefix_cache = prefix_cache
        self._weights = self._weights_version()
        self._admissions = 0
        self.stop_ids = stop_ids(tokenizer)
        # The model's embedding table may be padded past the tokenizer's ids; never sample those.
        self.vocab_size = min(tokenizer.vocab_size, model.config.vocab_size)
        self.free_slots = list(range(max_batch))
        self.waiting: deque[_Request] = deque()
        self.active: dict[int, _Request] = {}
        self._next_id = 0

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu", max_batch: int = 32,
                 cache_mb: float | None = DEFAULT_CACHE_MB, prefix_cache: bool = True, quantize: str | None = None) -> Engine:
        """quantize: None (the run's own weights), "int8" or "int4": weight-only quantization for
        faster decoding on a CPU (groklm.model.quantize)."""
        model, tokenizer = load(run_dir, device=device)
        if quantize:
            quantize_weights(model, quantize)
        return cls(model, tokenizer, max_batch, cache_mb, prefix_cache)

    # ---- requests -----------------------------------------------------------------------------

    def add_request(self, prompt: list[int], params: SamplingParams | None = None, constraint: Grammar | None = None) -> int:
        params = (params or SamplingParams()).validate()
        if not prompt:
            raise ConfigError("the prompt is empty: give at least one token")
        if len(prompt) >= self.block_size:
            raise ConfigError(
                f"the prompt is {len(prompt)} tokens; this model's context is {self.block_size}, "
                "and at least one token must be left for the reply"
            )
        if len(prompt) >= self.context or self.context < len(prompt) + params.max_tokens <= self.block_size:
            per_token = bytes_per_token(self.model.config, self.dtype) / 1024
            need = (f"the prompt is {len(prompt)} tokens" if len(prompt) >= self.context else f"the prompt ({len(prompt)} tokens) "
                    f"and max_tokens ({params.max_tokens}) need {len(prompt) + params.max_tokens} positions")
            raise ConfigError(
                f"{need}, more than the KV cache holds ({self.cache.capacity} positions of {per_token:.1f} KiB in "
                f"{self.cache_mb:g} MiB): raise --kv-cache-mb (cache_mb), or ask for fewer tokens"
            )
        if min(prompt) < 0 or max(prompt) >= self.model.config.vocab_size:
            raise ConfigError(f"prompt token ids must be in [0, {self.model.config.vocab_size})")
        request = _Request(self._next_id, list(prompt), params, constraint, self.tokenizer)
        self._next_id += 1
        self.waiting.append(request)
        return request.id

    def cancel(self, request_id: int) -> None:
        """Forget a request (e.g. its client went away), freeing its slot."""
        self.waiting = deque(r for r in self.waiting if r.id != request_id)
        if request_id in self.active:
            self._release(self.active.pop(request_id))

    def has_work(self) -> bool:
        return bool(self.waiting or self.active)

    @property
    def load(self) -> int:
        return len(self.waiting) + len(self.active)

    # ---- one step of the loop -----------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> list[Delta]:
        """Make room for the next token of every running request (pausing the newest when the
        cache is full), admit waiting requests (prefill), then decode one token for every request
        that was already running. Returns each request's new output."""
        running = self._make_room()
        deltas = []
        by_length: dict[int, list[_Request]] = {}
        for request in self._admit(self._pages_wanted_next(running)):  # as many tokens left to compute: one prefill pass
            by_length.setdefault(len(request.pending), []).append(request)
        for group in by_length.values():
            deltas += self._prefill(group)
        if running:
            running.sort(key=lambda r: r.slot)  # adjacent slots are read without a copy
            masks = self._masks([r.grammar for r in running])  # computed while the forward pass runs
            last = torch.tensor([[r.generated[-1]] for r in running], device=self.device)
            logits = self.model.forward_cached(last, self.cache, [r.slot for r in running])
            deltas += self._emit_rows(running, logits, masks)
        return deltas

    def _make_room(self) -> list[_Request]:
        """Reserve the cache position of every running request's next token, oldest first; when
        the pool is out of pages, pause the newest. Returns the requests that can decode."""
        running = sorted(self.active.values(), key=lambda r: r.order)
        ready = []
        while running:
            request = running.pop(0)
            while not self.cache.reserve(request.slot, 1) and running:
                self._pause(running.pop())
            if self.cache.reserve(request.slot, 1):  # a no-op once reserved
                ready.append(request)
            else:  # alone and still no room: cannot happen (add_request checks the whole pool), but never loop
                self._pause(request)
        return ready

    def _pages_wanted_next(self, running: list[_Request]) -> int:
        """How many of the running requests will need a new page at the next step."""
        page = self.cache.page_size
        return sum(1 for r in running if self.cache.lengths[r.slot] + 2 > len(self.cache.tables[r.slot]) * page)

    def _pause(self, request: _Request) -> None:
        """Give a running request's pages back; it waits first in line, keeping its reply so far."""
        self.active.pop(request.id)
        self._release(request)
        request.slot = None
        self.waiting.appendleft(request)

    def _admit(self, keep: int) -> list[_Request]:
        """Move waiting requests into free slots, first come first served, while the cache has
        pages for their prompts and `keep` more (what the running requests want next step)."""
        admitted = []
        if self.waiting and self.prefix_cache and self._weights != (weights := self._weights_version()):
            self.cache.forget_prefixes()  # computed by other weights: never serve them
            self._weights = weights
        while self.waiting and self.free_slots:
            request = self.waiting[0]
            tokens = request.prompt + request.generated[:-1]  # a paused request computes its reply so far again
            slot = min(self.free_slots)  # lowest first: rows stay adjacent
            self.cache.share(slot, self.cache.match(tokens) if self.prefix_cache else [])
            if not self.cache.reserve(slot, len(tokens) - self.cache.lengths[slot]) or self.cache.available() < keep:
                self.cache.reset(slot)
                break
            self.waiting.popleft()
            self.free_slots.remove(slot)
            request.slot, request.pending = slot, tokens[self.cache.lengths[slot]:]
            request.order, self._admissions = self._admissions, self._admissions + 1
            self.active[request.id] = request
            admitted.append(request)
        return admitted

    def _prefill(self, requests: list[_Request]) -> list[Delta]:
        """Compute the uncached rest of each prompt (the same number of tokens for each),
        filling their cache slots; a new request samples its first token."""
        rows = [i for i, r in enumerate(requests) if not r.generated]  # a paused one feeds its last token at the next decode step
        masks = self._masks([requests[i].grammar for i in rows])
        idx = torch.tensor([r.pending for r in requests], device=self.device)
        logits = self.model.forward_cached(idx, self.cache, [r.slot for r in requests])
        for request in requests:
            request.pending = []
            if self.prefix_cache:
                self.cache.remember(request.slot, request.prompt)
        return self._emit_rows([requests[i] for i in rows], logits[rows], masks)

    def _weights_version(self) -> tuple:
        """Changes whenever a parameter is replaced or changed in place (an optimizer step, a load)."""
        return tuple((p.data_ptr(), p._version) for p in self.model.parameters())

    def _release(self, request: _Request) -> None:
        self.cache.reset(request.slot)
        self.free_slots.append(request.slot)

    # ---- choosing a token and turning it into text ------------------------------------------------

    def _masks(self, grammars: list[GrammarState | None]) -> MaskBatch | None:
        """Start computing the grammar masks of a batch's rows (None when no row has a grammar)."""
        return MaskBatch(grammars, self.vocab_size) if any(g is not None for g in grammars) else None

    def _emit_rows(self, requests: list[_Request], logits: torch.Tensor, masks: MaskBatch | None) -> list[Delta]:
        """Each request's delta from its row of `logits`, after the grammars' masks."""
        if masks is None:
            return [self._emit(r, row) for r, row in zip(requests, logits)]
        logits = masks.apply(logits)
        return [self._fail(r, masks.errors[i]) if i in masks.errors else self._emit(r, row)
                for i, (r, row) in enumerate(zip(requests, logits))]

    def _emit(self, request: _Request, logits: torch.Tensor) -> Delta:
        """The request's next token and text; if anything about its row goes wrong, its last
        delta, with the error."""
        try:
            return self._next_token(request, logits)
        except Exception as exc:  # noqa: BLE001 - one request's failure must not end everybody's
            return self._fail(request, exc)

    def _fail(self, request: _Request, error: Exception) -> Delta:
        if self.active.pop(request.id, None) is not None:
            self._release(request)
        return Delta(request.id, "", [], finish_reason="error", error=error)

    def _next_token(self, request: _Request, logits: torch.Tensor) -> Delta:
        token, logprob = self._choose(request, logits)
        request.generated.append(token)
        if request.grammar is not None:
            request.grammar.advance(token)
        finish = self._finish_reason(request, token)
        text = "" if token in self.stop_ids else request.decoder.push(token)
        if finish is not None:
            text += request.decoder.flush()
        text = request.stops.push(text)
        if request.stops.hit:
            finish = "stop"
        elif finish is not None:
            text += request.stops.flush()
        if finish is not None:
            self.active.pop(request.id, None)
            self._release(request)
        return Delta(request.id, text, [token], [logprob] if logprob else None, finish)

    def _choose(self, request: _Request, logits: torch.Tensor) -> tuple[int, TokenLogprob | None]:
        p = request.params
        logits = logits[: self.vocab_size].float()
        if p.frequency_penalty or p.presence_penalty:
            if request.counts is None:
                request.counts = torch.zeros(self.vocab_size, device=logits.device)
            logits = logits - p.frequency_penalty * request.counts - p.presence_penalty * (request.counts > 0)
        token = int(sample_next(logits[None], p.temperature, p.top_k, p.top_p, request.generator))
        if request.counts is not None:
            request.counts[token] += 1
        return token, (self._logprob(logits, token, p.logprobs) if p.logprobs is not None else None)

    def _logprob(self, logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
        """The log-probability of the chosen token under the distribution it was drawn from
        (after penalties and the grammar, before temperature), and the `top` most likely others."""
        logp = F.log_softmax(logits, dim=-1)
        alternatives = None
        if top:
            values, ids = logp.topk(min(top, logp.numel()))
            alternatives = [(self._token_text(i), v) for i, v in zip(ids.tolist(), values.tolist())]
        raw = self._token_bytes(token)
        return TokenLogprob(self._token_text(token), token, list(raw), float(logp[token]), alternatives)

    def _token_bytes(self, token: int) -> bytes:
        return self.tokenizer.decode_bytes([token])

    def _token_text(self, token: int) -> str:
        return self._token_bytes(token).decode("utf-8", errors="replace")

    def _finish_reason(self, request: _Request, token: int) -> str | None:
        if token in self.stop_ids:
            return "stop"
        if len(request.generated) >= request.params.max_tokens:
            return "length"
        if self.cache.lengths[request.slot] >= self.context:
            return "length"  # no room left in the context for the token just sampled
        return None

    # ---- convenience: whole replies ------------------------------------------------------------

    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams | list[SamplingParams] | None = None,
        constraints: list[Grammar | None] | Grammar | None = None,
    ) -> list[Completion]:
        """Generate a reply to each prompt (batched), in order."""
        n = len(prompts)
        params_list = params if isinstance(params, list) else [params] * n
        constraint_list = constraints if isinstance(constraints, list) else [constraints] * n
        ids = [self.add_request(p, s, c) for p, s, c in zip(prompts, params_list, constraint_list)]
        parts: dict[int, list[Delta]] = {i: [] for i in ids}
        try:
            while any(not parts[i] or parts[i][-1].finish_reason is None for i in ids):
                for delta in self.step():
                    if delta.error is not None:
                        raise delta.error
                    parts[delta.request_id].append(delta)
        except BaseException:  # one failed, or an interrupt: leave none of this call's requests behind
            for i in ids:
                self.cancel(i)
            raise
        return [self._completion(prompt, parts[i]) for prompt, i in zip(prompts, ids)]

    def stream(self, prompt: list[int], params: SamplingParams | None = None, constraint: Grammar | None = None) -> Iterator[Delta]:
        """One request's deltas as they are made (runs the engine itself: single-user use)."""
        request_id = self.add_request(prompt, params, constraint)
        try:
            while True:
                for delta in self.step():
                    if delta.request_id == request_id:
                        if delta.error is not None:
                            raise delta.error
                        yield delta
                        if delta.finish_reason is not None:
                            return
        finally:
            self.cancel(request_id)

    @staticmethod
    def _completion(prompt: list[int], deltas: list[Delta]) -> Completion:
        tokens = [t for d in deltas for t in d.token_ids]
        logprobs = [lp for d in deltas for lp in (d.logprobs or [])] or None
        return Completion("".join(d.text for d in deltas), tokens, deltas[-1].finish_reason, len(prompt), len(tokens), logprobs)


def sample_responses(
    model,
    tokenizer,
    prompts: list[list[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """One answer per prompt (repeat a prompt for several answers), sampled side by side by the
    engine; temperature 0 is greedy.

    Each answer ends at a stop token (kept in the answer) or after max_new_tokens. A prompt is
    cut to its last block_size - max_new_tokens tokens so the answer fits. `generator` draws
    each answer's seed, so a seeded run samples the same answers again (e.g. after resume)."""
    keep = max(1, model.config.block_size - max_new_tokens)
    seeds = torch.randint(2**62, (len(prompts),), generator=generator).tolist()
    params = [SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_k=top_k, seed=s) for s in seeds]
    engine = Engine(model, tokenizer, max_batch=min(len(prompts), 64))
    return [c.token_ids for c in engine.generate([p[-keep:] for p in prompts], params)]


class AsyncEngine:
    """The engine behind an asyncio server: a background thread runs `step()` while there is
    work; each request's deltas travel to its coroutine through an asyncio queue.

    Only the engine thread changes the running batch: coroutines append new requests (an
    atomic deque append) and leave cancellations in a list the thread applies between steps."""

    def __init__(self, engine: Engine, max_waiting: int = 64):
        self.engine = engine
        self.capacity = len(engine.free_slots) + max_waiting
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queues: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._cancelled: list[int] = []
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="groklm-engine", daemon=True)
        self._thread.start()

    async def stream(self, prompt: list[int], params: SamplingParams | None = None,
                     constraint: Grammar | None = None) -> AsyncIterator[Delta]:
        """Deltas of one request. Raises ConfigError for a bad request, EngineBusy when full."""
        queue: asyncio.Queue = asyncio.Queue()
        with self._lock:
            if len(self._queues) >= self.capacity:
                raise EngineBusy(f"the server is busy ({len(self._queues)} requests in flight); retry shortly")
            request_id = self.engine.add_request(prompt, params, constraint)
            self._queues[request_id] = (asyncio.get_running_loop(), queue)
            self._wake.notify()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:  # finished, failed, or the consumer went away (client disconnect): free the slot
            with self._lock:
                self._queues.pop(request_id, None)
                self._cancelled.append(request_id)
                self._wake.notify()

    @property
    def in_flight(self) -> int:
        return len(self._queues)

    def _run(self) -> None:
        while True:
            with self._lock:
                while True:
                    for request_id in self._cancelled:
                        self.engine.cancel(request_id)
                    self._cancelled.clear()
                    if self._closed or self.engine.has_work():
                        break
                    self._wake.wait()
                if self._closed:
                    return
            try:
                deltas = self.engine.step()
            except Exception as exc:  # the batched forward pass itself failed (a bug): fail every
                # request in flight rather than leave them hanging. A failure in one request's row
                # never gets here: it comes back as that request's delta with an error.
                with self._lock:
                    for request_id in list(self._queues):
                        self._deliver(request_id, exc)
                        self.engine.cancel(request_id)
                continue
            with self._lock:
                for delta in deltas:
                    self._deliver(delta.request_id, delta if delta.error is None else delta.error)

    def _deliver(self, request_id: int, item) -> None:
        target = self._queues.get(request_id)
        if target is not None:
            loop, queue = target
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=5)
