"""One request's trouble stays that request's: the sampler is safe for every legal setting, and
a row of logits that goes wrong (NaN, +inf, nothing allowed) fails its own request only, while
the rest of the batch finishes with exactly the tokens it would have produced anyway."""

from __future__ import annotations

import asyncio
import string

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from groklm.infer.engine import AsyncEngine, Engine, SamplingParams
from groklm.infer.sampling import NonFiniteLogits, filter_logits, sample_next
from groklm.model import GPT, GPTConfig
from groklm.tokenizer.char import CharTokenizer

from helpers.models import Poisoned

CHARS = string.ascii_letters + string.digits + string.punctuation + " \n"
PROMPTS = ["hello there", "a", "The quick brown fox", "{[(<>)]}"]
VICTIM = 2  # the request whose row is poisoned
POISONS = {"nan": float("nan"), "+inf": float("inf"), "nothing allowed": float("-inf")}


@pytest.fixture(scope="module")
def tokenizer():
    return CharTokenizer(sorted(set(CHARS)))


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=96, n_layer=2, n_head=4, n_embd=32)).eval()


def params(i: int) -> SamplingParams:
    """Greedy for some requests, seeded sampling for others: both must be unchanged."""
    return SamplingParams(max_tokens=30, temperature=0.0 if i % 2 else 0.8, top_p=0.9, seed=i)


def run_all(engine: Engine, prompts: list[list[int]], constraints: dict | None = None) -> dict[int, list]:
    """Step the engine until every request is done; each request's deltas, by prompt index.
    Request ids are given in order from 0, so request k is prompt k. constraints: {k: grammar}."""
    ids = [engine.add_request(p, params(i), (constraints or {}).get(i)) for i, p in enumerate(prompts)]
    assert ids == list(range(len(prompts)))
    deltas: dict[int, list] = {i: [] for i in ids}
    while engine.has_work():
        for delta in engine.step():
            deltas[delta.request_id].append(delta)
    return deltas


def tokens(deltas: list) -> list[int]:
    return [t for d in deltas for t in d.token_ids]


def assert_idle(engine: Engine) -> None:
    assert not engine.active and not engine.waiting and sorted(engine.free_slots) == list(range(len(engine.free_slots)))
    assert all(length == 0 for length in engine.cache.lengths)


# ---- the sampler ----------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature, top_p", [(1e-300, 1.0), (5e-324, 1.0), (1.0, 1e-300), (2.0, 5e-324), (1e-300, 1e-300)])
def test_near_zero_temperature_or_top_p_is_greedy(temperature, top_p):
    logits = torch.randn(16, 500) * 8
    chosen = sample_next(logits, temperature, top_p=top_p, generator=torch.Generator().manual_seed(0))
    assert chosen.squeeze(1).tolist() == logits.argmax(-1).tolist()


def test_a_tiny_temperature_shares_exact_ties_and_nothing_else():
    logits = torch.tensor([[1.0, 3.0, 3.0, 2.9999]])
    draws = {int(sample_next(logits, 1e-300, generator=torch.Generator().manual_seed(s))) for s in range(64)}
    assert draws == {1, 2}


def test_top_p_always_keeps_the_most_likely_token():
    logits = torch.randn(8, 100)
    for p in (1e-300, 1e-30, 1e-8):
        kept = torch.isfinite(filter_logits(logits, top_p=p))
        assert kept.sum(-1).tolist() == [1] * 8 and kept.float().argmax(-1).tolist() == logits.argmax(-1).tolist()


@settings(max_examples=300, deadline=None)
@given(temperature=st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=2.0, exclude_min=True, allow_subnormal=True)),
       top_p=st.floats(min_value=0.0, max_value=1.0, exclude_min=True, allow_subnormal=True),
       top_k=st.one_of(st.none(), st.integers(1, 70)),
       scale=st.sampled_from([1e-6, 1.0, 30.0, 1e4, 3e38]), masked=st.integers(0, 63), seed=st.integers(0, 2**32))
def test_every_legal_setting_samples_an_allowed_token(temperature, top_p, top_k, scale, masked, seed):
    """Whatever the settings and however large the logits, the draw is a token the logits allow."""
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.rand(3, 64, generator=generator) * 2 - 1) * scale
    logits[:, :masked] = float("-inf")  # a grammar's mask: at least one token stays allowed
    chosen = sample_next(logits, temperature, top_k, top_p, generator)
    assert chosen.shape == (3, 1) and bool((chosen >= masked).all())


@pytest.mark.parametrize("poison", POISONS.values(), ids=POISONS.keys())
def test_logits_that_are_not_numbers_are_refused_not_sampled(poison):
    logits = torch.randn(3, 20)
    logits[1] = poison
    for temperature in (0.0, 1.0):
        with pytest.raises(NonFiniteLogits):
            sample_next(logits, temperature)


# ---- the engine: a poisoned row fails its request alone --------------------------------------------


@pytest.mark.parametrize("poison", POISONS.values(), ids=POISONS.keys())
@pytest.mark.parametrize("after", [0, 5], ids=["at its first token", "mid-reply"])
def test_a_poisoned_row_fails_its_request_and_the_batch_is_unchanged(tokenizer, model, poison, after):
    prompts = [tokenizer.encode(t) for t in PROMPTS]
    clean = run_all(Engine(model, tokenizer, max_batch=8), prompts)
    assert all(d[-1].finish_reason in ("stop", "length") for d in clean.values()) and len(tokens(clean[VICTIM])) > after
    poisoned = Poisoned(model, poison, after)
    engine = poisoned.aim(Engine(poisoned, tokenizer, max_batch=8), VICTIM)
    results = run_all(engine, prompts)
    victim = results.pop(VICTIM)
    assert victim[-1].finish_reason == "error" and isinstance(victim[-1].error, NonFiniteLogits)
    assert tokens(victim) == tokens(clean[VICTIM])[:after]  # what it made before its row went wrong
    assert {k: tokens(d) for k, d in results.items()} == {k: tokens(clean[k]) for k in results}
    assert all(d[-1].error is None for d in results.values())
    assert_idle(engine)
    # the engine goes on serving
    assert engine.generate([prompts[0]], params(0))[0].token_ids == tokens(clean[0])


def test_generate_raises_the_failure_and_leaves_nothing_behind(tokenizer, model):
    poisoned = Poisoned(model)
    engine = poisoned.aim(Engine(poisoned, tokenizer, max_batch=4), 1)
    with pytest.raises(NonFiniteLogits):
        engine.generate([tokenizer.encode(t) for t in PROMPTS], SamplingParams(max_tokens=10, temperature=0))
    assert_idle(engine)
    poisoned = Poisoned(model, after=2)
    engine = poisoned.aim(Engine(poisoned, tokenizer, max_batch=4), 0)
    stream = engine.stream(tokenizer.encode("x"), SamplingParams(max_tokens=10, temperature=0))
    assert len([next(stream), next(stream)]) == 2
    with pytest.raises(NonFiniteLogits):
        next(stream)
    assert_idle(engine)


def test_the_async_engine_fails_only_the_poisoned_stream(tokenizer, model):
    """As the server runs it: concurrent streams, one of which hits a NaN row mid-reply."""
    prompts = [tokenizer.encode(t) for t in PROMPTS]
    clean = run_all(Engine(model, tokenizer, max_batch=8), prompts)
    poisoned = Poisoned(model, after=3)
    # The coroutines below start in order, and each adds its request before it first waits: ids 0, 1, 2, ...
    server = AsyncEngine(poisoned.aim(Engine(poisoned, tokenizer, max_batch=8), VICTIM))

    async def collect(i: int):
        got = []
        try:
            async for delta in server.stream(prompts[i], params(i)):
                got += delta.token_ids
        except NonFiniteLogits as exc:
            return got, exc
        return got, None

    async def main():
        return await asyncio.gather(*(collect(i) for i in range(len(prompts))))

    try:
        outcome = asyncio.run(main())
        after = asyncio.run(collect(0))
    finally:
        server.shutdown()
    for i, (got, error) in enumerate(outcome):
        if i == VICTIM:
            assert isinstance(error, NonFiniteLogits) and got == tokens(clean[i])[:3]
        else:
            assert error is None and got == tokens(clean[i])
    assert after == (tokens(clean[0]), None)


class Breaks:
    """A grammar whose state allows every token and raises (a bug) on its `after`-th token."""

    def __init__(self, after: int):
        self.after = after

    def start(self):
        return self

    def allowed(self, vocab_size: int, device="cpu") -> torch.Tensor:
        return torch.ones(vocab_size, dtype=torch.bool, device=device)

    def advance(self, token_id: int) -> None:
        self.after -= 1
        if self.after == 0:
            raise RuntimeError("a bug in one request's grammar")

    def complete(self) -> bool:
        return False


def test_a_bug_in_one_requests_state_fails_that_request_alone(tokenizer, model):
    prompts = [tokenizer.encode(t) for t in PROMPTS]
    clean = run_all(Engine(model, tokenizer, max_batch=8), prompts)
    engine = Engine(model, tokenizer, max_batch=8)
    deltas = run_all(engine, prompts, {VICTIM: Breaks(4)})
    victim = deltas.pop(VICTIM)
    assert isinstance(victim[-1].error, RuntimeError) and victim[-1].finish_reason == "error"
    assert tokens(victim) == tokens(clean[VICTIM])[:3]  # the fourth token's advance raised: it is not emitted
    assert {k: tokens(d) for k, d in deltas.items()} == {k: tokens(clean[k]) for k in deltas}
    assert_idle(engine)
