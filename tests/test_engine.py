"""The inference engine, checked against the plain uncached model: the KV cache, batching and
continuous batching change the speed, never the tokens; then sampling controls, stop strings,
logprobs, UTF-8 streaming, constrained decoding and the asyncio wrapper."""

from __future__ import annotations

import asyncio
import re
import string
from typing import Annotated, Literal

import pytest
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from groklm.errors import ConfigError
from groklm.infer.constrain import Grammar, GrammarLimits, MaskBatch
from groklm.infer.decode import decode, generate, next_logits_of
from groklm.infer.engine import DEFAULT_CACHE_MB, AsyncEngine, Engine, EngineBusy, SamplingParams
from groklm.infer.stop_strings import StopStrings
from groklm.model import GPT, GPTConfig, RecurrentLM, RNNConfig
from groklm.model.kv_cache import PAGE_SIZE, KVCache, bytes_per_token
from groklm.tokenizer import Tokenizer
from groklm.tokenizer.char import CharTokenizer

CHARS = string.ascii_letters + string.digits + string.punctuation + " \n"
GREEDY = SamplingParams(max_tokens=24, temperature=0)


@pytest.fixture(scope="module")
def tokenizer():
    return CharTokenizer(sorted(set(CHARS)))


def tiny_gpt(vocab_size: int, seed: int = 0, **options) -> GPT:
    torch.manual_seed(seed)
    settings = dict(vocab_size=vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=32) | options
    return GPT(GPTConfig(**settings)).eval()


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_gpt(tokenizer.vocab_size)


def uncached(model, prompt: list[int], steps: int, stop: set[int]) -> list[int]:
    """Greedy tokens from the reference decoder (no cache), cut after the first stop token."""
    out = generate(model, torch.tensor([prompt]), steps, temperature=0)[0, len(prompt):].tolist()
    for i, token in enumerate(out):
        if token in stop:
            return out[: i + 1]
    return out


PROMPTS = ["hello there", "a", "The quick brown fox jumps over", "{[(<>)]}" * 3]


@pytest.mark.parametrize("options", [
    dict(pos="learned"), dict(pos="rope", n_kv_head=2), dict(pos="sinusoidal", norm="rmsnorm", mlp="swiglu"),
    dict(pos="rope", n_kv_head=1, bias=False, tie_embeddings=False),
])
def test_cached_generation_equals_uncached_greedy(tokenizer, options):
    model = tiny_gpt(tokenizer.vocab_size, **options)
    engine = Engine(model, tokenizer, max_batch=2)
    for text in PROMPTS:
        prompt = tokenizer.encode(text)
        [completion] = engine.generate([prompt], GREEDY)
        assert completion.token_ids == uncached(model, prompt, 24, engine.stop_ids)


def test_batched_equals_one_at_a_time(tokenizer, model):
    prompts = [tokenizer.encode(t) for t in PROMPTS]
    sampled = [SamplingParams(max_tokens=20, temperature=1.0, top_k=20, seed=s) for s in range(len(prompts))]
    for params in (GREEDY, sampled):
        batched = Engine(model, tokenizer, max_batch=8).generate(prompts, params)
        params_list = params if isinstance(params, list) else [params] * len(prompts)
        alone = [Engine(model, tokenizer, max_batch=1).generate([p], s)[0] for p, s in zip(prompts, params_list)]
        assert [c.token_ids for c in batched] == [c.token_ids for c in alone]
        assert [c.text for c in batched] == [c.text for c in alone]


def test_continuous_batching_requests_join_and_leave(tokenizer, model):
    """Requests arrive while others run, more requests than slots: each output is unchanged."""
    engine = Engine(model, tokenizer, max_batch=2)
    lengths = [5, 17, 9, 24, 3]
    expected = [Engine(model, tokenizer, 1).generate([tokenizer.encode(PROMPTS[i % 4])], SamplingParams(max_tokens=n, temperature=0))[0]
                for i, n in enumerate(lengths)]
    outputs: dict[int, list[int]] = {}
    ids = []
    for i, n in enumerate(lengths):
        ids.append(engine.add_request(tokenizer.encode(PROMPTS[i % 4]), SamplingParams(max_tokens=n, temperature=0)))
        for delta in engine.step():  # one step between arrivals
            outputs.setdefault(delta.request_id, []).extend(delta.token_ids)
        assert len(engine.active) <= 2
    while engine.has_work():
        for delta in engine.step():
            outputs.setdefault(delta.request_id, []).extend(delta.token_ids)
    assert [outputs[i] for i in ids] == [c.token_ids for c in expected]
    assert sorted(engine.free_slots) == [0, 1]


def test_seed_repeats_and_differs(tokenizer, model):
    engine = Engine(model, tokenizer, max_batch=4)
    prompt = tokenizer.encode("hello")

    def sample(seed):
        return engine.generate([prompt], SamplingParams(max_tokens=30, temperature=1.0, seed=seed))[0].token_ids

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)


def test_penalties_match_a_hand_written_loop(tokenizer, model):
    """Greedy with frequency and presence penalties, recomputed step by step without the engine."""
    prompt = tokenizer.encode("aaaa")
    params = SamplingParams(max_tokens=20, temperature=0, frequency_penalty=0.7, presence_penalty=0.4)
    [completion] = Engine(model, tokenizer).generate([prompt], params)
    ids, counts, out = list(prompt), torch.zeros(tokenizer.vocab_size), []
    for _ in range(len(completion.token_ids)):
        logits = model(torch.tensor([ids]))[0][0, -1, : tokenizer.vocab_size]
        logits = logits - 0.7 * counts - 0.4 * (counts > 0).float()
        token = int(logits.argmax())
        out.append(token)
        ids.append(token)
        counts[token] += 1
    assert completion.token_ids == out


def test_logprobs_are_the_models_distribution(tokenizer, model):
    prompt = tokenizer.encode("xyz")
    [completion] = Engine(model, tokenizer).generate([prompt], SamplingParams(max_tokens=6, temperature=0.9, seed=0, logprobs=3))
    ids = prompt + completion.token_ids
    logp = F.log_softmax(model(torch.tensor([ids]))[0][0, len(prompt) - 1 : -1], dim=-1)
    assert len(completion.logprobs) == len(completion.token_ids)
    for step, (entry, token) in enumerate(zip(completion.logprobs, completion.token_ids)):
        assert entry.token_id == token and entry.token == tokenizer.decode([token])
        assert entry.logprob == pytest.approx(logp[step, token].item(), abs=1e-4)
        assert len(entry.top) == 3 and entry.top[0][1] == pytest.approx(logp[step].max().item(), abs=1e-4)
        assert [lp for _, lp in entry.top] == sorted((lp for _, lp in entry.top), reverse=True)


def test_stop_strings_cut_the_text_and_are_held_back(tokenizer, model):
    prompt = tokenizer.encode(PROMPTS[2])
    engine = Engine(model, tokenizer)
    full = engine.generate([prompt], SamplingParams(max_tokens=40, temperature=1.0, seed=5))[0].text
    assert len(full) > 10
    stop = full[6:9]  # a stop string that certainly appears
    deltas = list(engine.stream(prompt, SamplingParams(max_tokens=40, temperature=1.0, seed=5, stop=["\x00never", stop])))
    text = "".join(d.text for d in deltas)
    assert text == full[: full.find(stop)]
    assert deltas[-1].finish_reason == "stop" and all(d.finish_reason is None for d in deltas[:-1])
    # Until the stop string is ruled out, its first characters are not released.
    released = ""
    for d in deltas[:-1]:
        released += d.text
        assert not any(released.endswith(stop[:k]) for k in range(1, len(stop))) or full.startswith(released)


def test_stop_strings_hold_back_only_what_may_begin_a_stop():
    stops = StopStrings(["User:", "##"])
    assert stops.push("Hello Us") == "Hello "  # "Us" may begin "User:"
    assert stops.push("a") == "Usa"  # ruled out: released
    assert stops.push(" #") == " " and stops.flush() == "#"  # the text ended: "#" was no stop after all
    assert not stops.hit
    stops = StopStrings(["User:"])
    assert stops.push("ok\nUse") == "ok\n" and stops.push("r: more") == "" and stops.hit
    assert stops.push("after") == "" and stops.flush() == ""
    assert StopStrings([]).push("anything") == "anything"


def test_reference_decoder_hook_sees_each_step_and_its_logits(tokenizer, model):
    """The hook may change every step's logits (a grammar's mask); the step reports the logits
    the token was drawn from, and the hook runs after the caller saw the previous token."""
    allowed = tokenizer.encode("ab")
    seen: list[int] = []
    hook_saw: list[int] = []  # how many tokens the caller had seen when the hook ran

    def only_a_and_b(logits):
        hook_saw.append(len(seen))
        mask = torch.full_like(logits, float("-inf"))
        mask[:, allowed] = 0
        return logits + mask

    steps = decode(next_logits_of(model), torch.tensor([tokenizer.encode("xyz")]), 12, temperature=1.0, seed=0,
                   hook=only_a_and_b)
    for step in steps:
        assert step.logits.isfinite().sum().item() == len(allowed)
        seen.append(int(step.token))
    assert len(seen) == 12 and set(seen) <= set(allowed) and hook_saw == list(range(12))
    greedy = [int(s.token) for s in decode(next_logits_of(model), torch.tensor([tokenizer.encode("xyz")]), 5, 0)]
    assert greedy == generate(model, torch.tensor([tokenizer.encode("xyz")]), 5, temperature=0)[0, 3:].tolist()


def test_the_engine_serves_gpt_models_only(tokenizer):
    rnn = RecurrentLM(RNNConfig(vocab_size=tokenizer.vocab_size, n_layer=1, n_embd=16, cell="gru"))
    with pytest.raises(ConfigError, match=r"recurrent model \(gru\).*GPT runs only"):
        Engine(rnn, tokenizer)


def test_length_limits(tokenizer, model):
    engine = Engine(model, tokenizer)
    [short] = engine.generate([tokenizer.encode("hi")], SamplingParams(max_tokens=3, temperature=0))
    assert short.finish_reason == "length" and short.completion_tokens <= 3
    # A prompt that nearly fills the context: the reply ends when the cache is full.
    [full] = engine.generate([tokenizer.encode("z" * 60)], SamplingParams(max_tokens=50, temperature=0))
    assert full.prompt_tokens + full.completion_tokens <= 64 + 1 and full.completion_tokens <= 5
    with pytest.raises(ConfigError, match="context"):
        engine.add_request(tokenizer.encode("z" * 64))
    for bad in (dict(temperature=-0.5), dict(temperature=2.5), dict(top_p=0), dict(max_tokens=0),
                dict(stop=["a"] * 5), dict(logprobs=21), dict(presence_penalty=3)):
        with pytest.raises(ConfigError):
            engine.add_request([1, 2], SamplingParams(**bad))


def test_streaming_releases_only_whole_characters():
    """A byte-level vocabulary splits "é" (2 bytes) and "€" (3 bytes) over several tokens; the
    grammar makes a random model write them, and no delta ever holds half a character."""
    tokenizer = Tokenizer.train("plain ascii text only", vocab_size=256 + 3)  # bytes only, no merges
    model = tiny_gpt(tokenizer.vocab_size, block_size=128)
    grammar = Grammar.from_regex("(é|€|a){6,12}", tokenizer)
    engine = Engine(model, tokenizer)
    for seed in range(3):
        deltas = list(engine.stream(tokenizer.encode("x"), SamplingParams(max_tokens=60, temperature=1.0, seed=seed), grammar))
        tokens = [t for d in deltas for t in d.token_ids]
        assert "".join(d.text for d in deltas) == tokenizer.decode(tokens[:-1])
        assert all("\ufffd" not in d.text for d in deltas)
        assert any(d.token_ids and not d.text for d in deltas[:-1])  # a token that completed no character


class Person(BaseModel):
    name: str = Field(max_length=12)
    age: int
    tags: list[Annotated[str, Field(max_length=8)]] = Field(max_length=3)
    role: Literal["admin", "user"] | None = None


def test_json_schema_constraint_always_parses(tokenizer):
    grammar = Grammar.from_json_schema(Person.model_json_schema(), tokenizer)
    engine = Engine(tiny_gpt(tokenizer.vocab_size, block_size=256), tokenizer, max_batch=8)
    params = [SamplingParams(max_tokens=200, temperature=1.0, seed=s) for s in range(8)]
    completions = engine.generate([tokenizer.encode("person:")] * 8, params, grammar)
    for completion in completions:
        assert completion.finish_reason == "stop", completion.text
        Person.model_validate_json(completion.text)  # raises if the output is not a valid Person
    assert len({c.text for c in completions}) > 1  # sampled, not one canned answer


def test_regex_constraint_and_bad_patterns(tokenizer, model):
    grammar = Grammar.from_regex(r"[0-9]{3}-[a-z]{2,5}", tokenizer)
    [completion] = Engine(model, tokenizer).generate([tokenizer.encode("code:")], SamplingParams(temperature=1.0, seed=1), grammar)
    assert re.fullmatch(r"[0-9]{3}-[a-z]{2,5}", completion.text)
    with pytest.raises(ConfigError):
        Grammar.from_json_schema({"type": "object", "properties": {"x": {"$ref": "#/nowhere"}}}, tokenizer)


@pytest.mark.parametrize("overlap", [True, False])
def test_a_batch_mixing_grammars_and_free_rows_samples_as_each_request_alone(tokenizer, overlap, monkeypatch):
    """A batch's masks are computed together (in the worker thread while the forward pass runs,
    or after it when they are cheap) and applied in one operation: no row gets another's mask,
    so each reply is the one its request gets alone, whether it joined at the start or later
    (continuous batching)."""
    monkeypatch.setattr(MaskBatch, "HANDOFF_SECONDS", -1.0 if overlap else float("inf"))
    model = tiny_gpt(tokenizer.vocab_size, block_size=256)
    person = Grammar.from_json_schema(Person.model_json_schema(), tokenizer)
    code = Grammar.from_regex(r"[0-9]{3}-[a-z]{2,5}", tokenizer)
    grammars = [person, None, code, person, None, code, person, None]
    params = [SamplingParams(max_tokens=60, temperature=(1.0, 0.0, 0.7)[i % 3], seed=i, top_k=(None, 20)[i % 2],
                             frequency_penalty=0.5 if i % 4 == 0 else 0.0, logprobs=2 if i % 3 == 0 else None)
              for i in range(8)]
    prompts = [tokenizer.encode(f"item {i}:") for i in range(8)]

    def replies(completions):
        return [(c.text, c.token_ids, c.finish_reason, [lp.token_id for lp in c.logprobs or []]) for c in completions]

    alone = replies(Engine(model, tokenizer, max_batch=1).generate([p], s, g)[0] for p, s, g in zip(prompts, params, grammars))
    for max_batch in (8, 3):
        assert replies(Engine(model, tokenizer, max_batch=max_batch).generate(prompts, params, grammars)) == alone
    for (text, _, finish, _), grammar in zip(alone, grammars):
        if grammar is person and finish == "stop":  # or cut short by max_tokens
            Person.model_validate_json(text)
        elif grammar is code:
            assert re.fullmatch(r"[0-9]{3}-[a-z]{2,5}", text)
    assert sum(finish == "stop" for _, _, finish, _ in alone[::3]) >= 2  # the grammars were followed to their ends


def test_a_grammar_over_its_limit_fails_its_own_request_alone(tokenizer, model):
    tight = Grammar.from_regex("[a-z]{1,400}", tokenizer, GrammarLimits(max_states=20))
    params = SamplingParams(max_tokens=40, temperature=1.0, seed=3)
    prompts = [tokenizer.encode(t) for t in PROMPTS]
    clean = Engine(model, tokenizer, max_batch=4).generate(prompts, params)
    engine = Engine(model, tokenizer, max_batch=4)
    ids = [engine.add_request(p, params, tight if i == 1 else None) for i, p in enumerate(prompts)]
    deltas: dict[int, list] = {i: [] for i in ids}
    while engine.has_work():
        for delta in engine.step():
            deltas[delta.request_id].append(delta)
    victim = deltas.pop(ids[1])
    assert victim[-1].finish_reason == "error" and "--grammar-max-states" in str(victim[-1].error)
    assert 0 < len([t for d in victim for t in d.token_ids]) < 40
    assert {i: [t for d in got for t in d.token_ids] for i, got in deltas.items()} == {
        ids[i]: clean[i].token_ids for i in (0, 2, 3)}
    assert not engine.active and sorted(engine.free_slots) == [0, 1, 2, 3]


def test_async_engine_streams_concurrent_requests_and_frees_slots(tokenizer, model):
    engine = Engine(model, tokenizer, max_batch=4)
    prompts = [tokenizer.encode(t) for t in PROMPTS * 2]
    expected = [Engine(model, tokenizer, 1).generate([p], GREEDY)[0].text for p in prompts]
    aengine = AsyncEngine(engine, max_waiting=4)

    async def one(prompt):
        return "".join([d.text async for d in aengine.stream(prompt, GREEDY)])

    async def abandon():
        async for _ in aengine.stream(prompts[0], SamplingParams(max_tokens=50, temperature=0)):
            break  # the consumer goes away after the first delta

    async def main():
        texts = await asyncio.gather(*(one(p) for p in prompts))
        await abandon()
        with pytest.raises(EngineBusy):
            await asyncio.gather(*(one(p) for p in prompts + prompts))  # 16 > 4 slots + 4 waiting
        await asyncio.sleep(0.5)
        return texts

    try:
        assert asyncio.run(main()) == expected
        assert not engine.active and sorted(engine.free_slots) == [0, 1, 2, 3]
    finally:
        aengine.shutdown()


# ---- the KV cache's memory budget, pausing, and prefix caching ---------------------------------


def budget_mb(model, pages: int) -> float:
    """The cache_mb that holds exactly `pages` pages of this model's keys and values."""
    return pages * PAGE_SIZE * bytes_per_token(model.config) / 2**20


def assert_idle(engine: Engine) -> None:
    """Nothing running: every page is free or held once, by the prefix cache."""
    cache = engine.cache
    assert not engine.active and all(not table for table in cache.tables) and sorted(engine.free_slots) == list(range(cache.slots))
    assert sorted(cache.free + list(cache.key_of)) == list(range(cache.pages))
    assert all(cache.refs[page] == 1 for page in cache.key_of) and len(cache.prefixes) == len(cache.key_of)


class PrefillSpy:
    """Records how many tokens each prefill pass (more than one new token) of a model computed."""

    def __init__(self, monkeypatch, model):
        self.sizes: list[int] = []
        forward = model.forward_cached

        def spy(idx, cache, slots):
            if idx.size(1) > 1:
                self.sizes += [idx.size(1)] * idx.size(0)
            return forward(idx, cache, slots)

        monkeypatch.setattr(model, "forward_cached", spy)


def test_the_cache_is_sized_by_the_budget_not_the_context():
    smollm2 = GPTConfig(vocab_size=49152, block_size=8192, n_layer=30, n_head=9, n_kv_head=3, n_embd=576)
    assert bytes_per_token(smollm2) == 46080  # 30 layers x (keys + values) x 3 heads x 64 x 4 bytes
    cache = KVCache(smollm2, slots=32, budget_bytes=64 * 2**20)
    stored = sum(t.numel() * t.element_size() for t in cache.keys + cache.values)
    assert cache.pages == 64 * 2**20 // (PAGE_SIZE * 46080) and stored <= 64 * 2**20 and cache.capacity == cache.pages * PAGE_SIZE
    tiny = GPTConfig(vocab_size=10, block_size=40, n_layer=1, n_head=2, n_embd=8)
    assert KVCache(tiny, slots=3).pages == 3 * 3  # no budget: every slot's whole context (40 -> 3 pages of 16)
    assert KVCache(tiny, slots=3, budget_bytes=1 << 30).pages == 9  # never more than that
    with pytest.raises(ConfigError, match="no page"):
        KVCache(tiny, slots=3, budget_bytes=100)


def test_a_request_the_cache_cannot_hold_is_refused_naming_the_flag(tokenizer, model):
    engine = Engine(model, tokenizer, max_batch=2, cache_mb=budget_mb(model, 2))  # 32 positions; the model has 64
    assert engine.context == 32 and Engine(model, tokenizer).context == 64
    for prompt, max_tokens in (("z" * 20, 20), ("z" * 40, 1)):  # fits the model's context, not the cache
        with pytest.raises(ConfigError, match="raise --kv-cache-mb"):
            engine.add_request(tokenizer.encode(prompt), SamplingParams(max_tokens=max_tokens))
    with pytest.raises(ConfigError, match="context is 64"):
        engine.add_request(tokenizer.encode("z" * 64))
    # max_tokens past the model's context (the server's "as long as fits"): the reply ends where the cache does
    [reply] = engine.generate([tokenizer.encode("z" * 20)], SamplingParams(max_tokens=1 << 30, temperature=0))
    assert reply.finish_reason == "stop" or (reply.finish_reason == "length" and 20 + reply.completion_tokens == 33)
    for bad in (0, -1, 1e-6):
        with pytest.raises(ConfigError, match="kv-cache-mb"):
            Engine(model, tokenizer, cache_mb=bad)


def test_a_full_cache_pauses_the_newest_request_and_no_reply_changes(tokenizer, model, monkeypatch):
    prompts = [tokenizer.encode(t) for t in PROMPTS]
    params = [SamplingParams(max_tokens=30, temperature=0), SamplingParams(max_tokens=30, temperature=1.0, seed=3),
              SamplingParams(max_tokens=30, temperature=0.8, top_k=10, seed=4), SamplingParams(max_tokens=30, temperature=0)]
    expected = Engine(model, tokenizer, max_batch=4, cache_mb=None).generate(prompts, params)
    engine = Engine(model, tokenizer, max_batch=4, cache_mb=budget_mb(model, 6))  # 96 positions; the four need ~190
    paused = []
    pause = engine._pause
    monkeypatch.setattr(engine, "_pause", lambda request: (paused.append(request.id), pause(request)))
    got = engine.generate(prompts, params)
    assert paused, "the pool never ran out: the test checks nothing"
    assert [c.token_ids for c in got] == [c.token_ids for c in expected]
    assert [c.text for c in got] == [c.text for c in expected]
    assert_idle(engine)


def test_prefix_cache_prefills_a_shared_prompt_once_and_changes_no_reply(tokenizer, monkeypatch):
    model = tiny_gpt(tokenizer.vocab_size, block_size=256, pos="rope", n_kv_head=2, norm="rmsnorm", mlp="swiglu")
    system = tokenizer.encode("System: you are a careful assistant. Tools: calc(expr), search(query). " * 2)
    prompts = [system + tokenizer.encode(q) for q in ("What is the capital of France?", "Who are you?", "Say hi.",
                                                           "What is the capital of Spain?")]
    params = SamplingParams(max_tokens=20, temperature=0)
    expected = [Engine(model, tokenizer, prefix_cache=False).generate([p], params)[0] for p in prompts]
    engine = Engine(model, tokenizer, max_batch=2)
    spy = PrefillSpy(monkeypatch, model)
    got = [engine.generate([p], params)[0] for p in prompts]  # one at a time: each finds the pages of those before
    assert [c.token_ids for c in got] == [c.token_ids for c in expected]
    assert [c.text for c in got] == [c.text for c in expected]

    def shared(a, b):  # the whole pages two prompts start with alike
        same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        return same // PAGE_SIZE * PAGE_SIZE

    reused = [0] + [max(shared(p, q) for q in prompts[:i]) for i, p in enumerate(prompts) if i]
    assert spy.sizes == [len(p) - r for p, r in zip(prompts, reused)]
    assert reused[1] >= len(system) - PAGE_SIZE and reused[3] > reused[1]  # "What is the capital of " shares more
    assert_idle(engine)

    # equal prompts in one pass, then together with the others: still the same replies
    spy.sizes.clear()
    again = engine.generate([prompts[0], prompts[0]] + prompts, params)
    assert [c.token_ids for c in again] == [c.token_ids for c in expected[:1] * 2 + expected]
    assert max(spy.sizes) < len(system)  # every prompt found its system prompt
    assert_idle(engine)

    off = Engine(model, tokenizer, prefix_cache=False)
    off.generate(prompts, params)
    assert not off.cache.prefixes


def test_prefix_cache_forgets_least_recently_used_pages_first(tokenizer, model, monkeypatch):
    engine = Engine(model, tokenizer, max_batch=2, cache_mb=budget_mb(model, 8))  # two slots: 8 pages at most anyway
    prompts = [tokenizer.encode(c * 40) for c in "abcde"]  # 40 tokens: two whole pages remembered each
    params = SamplingParams(max_tokens=8, temperature=0)  # 48 positions: three pages while running
    expected = [Engine(model, tokenizer, prefix_cache=False).generate([p], params)[0].token_ids for p in prompts]
    spy = PrefillSpy(monkeypatch, model)
    order = [0, 1, 2, 3, 1, 4]
    replies = [engine.generate([prompts[i]], params)[0].token_ids for i in order]
    assert replies == [expected[i] for i in order]
    assert spy.sizes == [40, 40, 40, 40, 8, 40]  # the second "b" reused its two pages
    assert_idle(engine)
    # "d" made room by forgetting a's second page (a's first still continued it), "e" then the rest of
    # a and c's second page; "b" was used again in between and stayed
    assert [len(engine.cache.match(p)) for p in prompts] == [0, 2, 1, 2, 2]
    assert len(engine.cache.key_of) == 7 <= engine.cache.pages


def test_prefix_cache_never_serves_keys_of_other_weights(tokenizer, monkeypatch):
    model = tiny_gpt(tokenizer.vocab_size, pos="rope")
    prompt = tokenizer.encode("the same long prompt, asked again and again")
    engine = Engine(model, tokenizer)
    spy = PrefillSpy(monkeypatch, model)
    engine.generate([prompt], GREEDY)
    engine.generate([prompt], GREEDY)
    with torch.no_grad():
        model.blocks[0].attn.qkv.weight.mul_(1.5)  # in place, as an optimizer step does
    [after] = engine.generate([prompt], GREEDY)
    assert after.token_ids == Engine(model, tokenizer, prefix_cache=False).generate([prompt], GREEDY)[0].token_ids
    model.load_state_dict(tiny_gpt(tokenizer.vocab_size, seed=1, pos="rope").state_dict())
    [loaded] = engine.generate([prompt], GREEDY)
    assert spy.sizes == [len(prompt), len(prompt) - 32] + [len(prompt)] * 3  # the third: the uncached check's
    fresh = Engine(model, tokenizer, prefix_cache=False)
    assert loaded.token_ids == fresh.generate([prompt], GREEDY)[0].token_ids


def test_cli_cache_flags_default_to_the_engines():
    from groklm.cli.main import build_parser

    for command in (["serve", "RUN"], ["chat", "RUN"]):
        args = build_parser().parse_args(command)
        assert args.kv_cache_mb == DEFAULT_CACHE_MB and args.prefix_cache is True
        assert build_parser().parse_args(command + ["--kv-cache-mb", "64", "--no-prefix-cache"]).prefix_cache is False


def test_shared_prefixes_pausing_and_arrivals_together_change_no_reply(tokenizer, monkeypatch):
    """Requests that share prompt beginnings arrive between steps into a pool too small for all
    of them: pages are shared, remembered, forgotten and taken back; every reply is unchanged."""
    model = tiny_gpt(tokenizer.vocab_size, block_size=128, pos="rope", n_kv_head=2)
    heads = ["You are a helpful assistant who answers briefly. ", "Context: the sky is blue and grass is green. "]
    prompts = [tokenizer.encode(heads[i % 2] + f"Question {i}: " + "why? " * (i % 3)) for i in range(10)]
    params = [SamplingParams(max_tokens=12 + 5 * (i % 4), temperature=0.7, seed=i) for i in range(10)]
    expected = [Engine(model, tokenizer, max_batch=1, cache_mb=None, prefix_cache=False).generate([p], s)[0].token_ids
                for p, s in zip(prompts, params)]
    engine = Engine(model, tokenizer, max_batch=4, cache_mb=budget_mb(model, 14))
    paused = []
    pause = engine._pause
    monkeypatch.setattr(engine, "_pause", lambda request: (paused.append(request.id), pause(request)))
    spy = PrefillSpy(monkeypatch, model)
    outputs: dict[int, list[int]] = {}
    ids = []
    for prompt, p in zip(prompts, params):
        ids.append(engine.add_request(prompt, p))
        for delta in engine.step():
            outputs.setdefault(delta.request_id, []).extend(delta.token_ids)
    while engine.has_work():
        for delta in engine.step():
            outputs.setdefault(delta.request_id, []).extend(delta.token_ids)
    assert [outputs[i] for i in ids] == expected
    assert paused and sum(spy.sizes) < sum(len(p) for p in prompts)  # it paused, and prefixes were shared
    assert_idle(engine)


@pytest.mark.slow
def test_the_real_30_layer_model_prefix_cache_and_budget(tmp_path):
    """SmolLM2-135M-Instruct (imported from its packaged GGUF): the default budget holds its whole
    8192-token context in 512 MiB instead of 32 x 8192 positions, and replies sharing a system
    prompt are the same token for token with prefix caching on and off."""
    from groklm.errors import CheckpointError
    from groklm.interop.imports import import_run
    from groklm.tokenizer.chat import render_prompt

    try:
        model, tokenizer, _ = import_run("smollm2-135m-instruct", tmp_path / "smol")
    except CheckpointError as error:
        pytest.skip(str(error))
    engine = Engine(model.eval(), tokenizer)
    stored = sum(t.numel() * t.element_size() for t in engine.cache.keys + engine.cache.values)
    assert stored <= DEFAULT_CACHE_MB * 2**20 < 32 * 8192 * bytes_per_token(model.config)
    assert engine.context == 8192
    system = "You are the assistant of a hiking shop. Returns are free within 30 days; delivery takes 3 to 5 days. " * 6
    chats = [render_prompt(tokenizer, [{"role": "system", "content": system}, {"role": "user", "content": q}])
             for q in ("How long does delivery take?", "Can I return a tent?", "What is the capital of France?")]
    params = SamplingParams(max_tokens=24, temperature=0)
    off = [Engine(model, tokenizer, prefix_cache=False).generate([c], params)[0] for c in chats]
    on = [engine.generate([c], params)[0] for c in chats]
    assert [c.token_ids for c in on] == [c.token_ids for c in off]
    assert len(engine.cache.match(chats[-1])) * PAGE_SIZE >= len(chats[0]) - 40  # the system prompt was kept
