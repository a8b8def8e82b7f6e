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
from groklm.infer.constrain import Grammar
from groklm.infer.decode import decode, generate, next_logits_of
from groklm.infer.engine import AsyncEngine, Engine, EngineBusy, SamplingParams
from groklm.infer.stop_strings import StopStrings
from groklm.model import GPT, GPTConfig, RecurrentLM, RNNConfig
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
