"""`groklm serve` through the official `openai` client: a real server process on loopback.

One tiny random run and one server for the whole module. Greedy replies are checked against
the same prompt run one at a time through the Engine in this process, so the server must
return exactly what the model says, whatever else is in the batch.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import jsonschema
import pytest
import regex
from outlines_core.json_schema import build_regex_from_schema

from groklm.infer.engine import Engine, SamplingParams
from groklm.serve.generation import ANY_JSON_OBJECT
from groklm.tokenizer.chat import render_prompt

from helpers.servers import KEY, MODEL, held, wait_idle

openai = pytest.importorskip("openai")

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]},
                                                    "days": {"type": "integer", "enum": [1, 2, 3]}},
                   "required": ["city", "days"]}}}
CLOCK = {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def engine(server):
    """The reference: the same run, one request at a time."""
    return Engine.from_run(server.run, max_batch=1)


def reference(engine: Engine, messages: list[dict], max_tokens: int) -> tuple[str, int, int]:
    """(text, prompt tokens, completion tokens) of the greedy reply, computed alone."""
    ids = render_prompt(engine.tokenizer, messages)
    done = engine.generate([ids], SamplingParams(max_tokens=max_tokens, temperature=0.0))[0]
    return done.text, done.prompt_tokens, done.completion_tokens


def ask(text: str) -> list[dict]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


def test_models(client):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_chat_whole_reply_is_the_models_greedy_reply(client, engine):
    reply = client.chat.completions.create(model=MODEL, messages=ask("What is 2+3?"), temperature=0, max_tokens=24)
    text, prompt_tokens, completion_tokens = reference(engine, ask("What is 2+3?"), 24)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == text
    assert choice.finish_reason in ("stop", "length") and reply.object == "chat.completion"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt_tokens, completion_tokens)
    assert reply.usage.total_tokens == prompt_tokens + completion_tokens


def test_chat_stream_adds_up_to_the_whole_reply(client, engine):
    stream = client.chat.completions.create(model=MODEL, messages=ask("Name a colour."), temperature=0, max_tokens=30,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text, prompt_tokens, completion_tokens = reference(engine, ask("Name a colour."), 30)
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == text and len([p for p in pieces if p]) > 1  # it really streamed
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1
    # include_usage: every chunk says usage null, and one last chunk has no choices and the counts
    assert all(c.usage is None for c in chunks[:-1]) and chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (prompt_tokens, completion_tokens)


def test_seeds_repeat_and_choices_differ(client):
    def sample(seed: int, n: int = 1):
        reply = client.chat.completions.create(model=MODEL, messages=ask("Say something."), temperature=1.0,
                                               max_tokens=20, seed=seed, n=n)
        return [c.message.content for c in reply.choices]

    assert sample(7) == sample(7) != sample(8)
    two = sample(7, n=2)
    assert two[0] == sample(7)[0] and two[0] != two[1]  # choice i is sampled with seed + i


def test_stop_strings_and_penalties(client, engine):
    text, _, _ = reference(engine, ask("Count."), 40)
    stop = text[5:7]  # cut the known reply at its own characters
    reply = client.chat.completions.create(model=MODEL, messages=ask("Count."), temperature=0, max_tokens=40, stop=[stop])
    assert reply.choices[0].message.content == text[: text.index(stop)] and reply.choices[0].finish_reason == "stop"
    penalised = client.chat.completions.create(model=MODEL, messages=ask("Count."), temperature=0, max_tokens=40,
                                               frequency_penalty=2.0, presence_penalty=2.0)
    assert penalised.choices[0].message.content != text  # a random model repeats itself; penalties break that


def test_logprobs(client):
    reply = client.chat.completions.create(model=MODEL, messages=ask("Hi."), temperature=0, max_tokens=6,
                                           logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens == 6
    for item in content:
        assert len(item.top_logprobs) == 3 and item.logprob <= 0
        assert item.logprob == pytest.approx(item.top_logprobs[0].logprob, abs=1e-5)  # greedy took the best
        assert bytes(item.bytes).decode() == item.token
    assert "".join(i.token for i in content) == reply.choices[0].message.content


def test_forced_tool_call_is_valid(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=ask("Weather in Paris for two days?"), temperature=0, max_tokens=60,
        tools=[WEATHER, CLOCK], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    # "required" may pick either tool; the call still validates against that tool's schema
    reply = client.chat.completions.create(model=MODEL, messages=ask("Time?"), temperature=0.8, seed=3, max_tokens=60,
                                           tools=[WEATHER, CLOCK], tool_choice="required")
    (call,) = reply.choices[0].message.tool_calls
    schema = {"get_weather": WEATHER, "now": CLOCK}[call.function.name]["function"]["parameters"]
    jsonschema.validate(json.loads(call.function.arguments), schema)


def test_tool_results_go_back_into_the_conversation(client, engine):
    messages = [*ask("Weather in Oslo?"),
                {"role": "assistant", "content": None, "tool_calls": [{"id": "call_a", "type": "function", "function": {
                    "name": "get_weather", "arguments": '{"city": "Oslo", "days": 1}'}}]},
                {"role": "tool", "tool_call_id": "call_a", "content": "5 C"}]
    stream = client.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=20,
                                            tools=[WEATHER], tool_choice="none", stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    chatml = [*ask("Weather in Oslo?"), {"role": "assistant", "content": 'CALL get_weather({"city": "Oslo", "days": 1})'},
              {"role": "tool", "content": "5 C"}]
    assert text == reference(engine, chatml, 20)[0]


def test_streamed_tool_call(client):
    stream = client.chat.completions.create(model=MODEL, messages=ask("Weather?"), temperature=0, max_tokens=60,
                                            tools=[WEATHER], tool_choice="required", stream=True)
    chunks = [c for c in stream if c.choices]
    calls = [call for c in chunks for call in c.choices[0].delta.tool_calls or []]
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    jsonschema.validate(json.loads(calls[0].function.arguments), WEATHER["function"]["parameters"])
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert not "".join(c.choices[0].delta.content or "" for c in chunks)  # the call line is not content


def test_json_schema_response_format(client):
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                               "age": {"type": "integer", "enum": [20, 30, 40]},
                                               "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 2}},
              "required": ["name", "age", "tags"]}
    for seed in (0, 1):
        reply = client.chat.completions.create(
            model=MODEL, messages=ask("Describe a person."), temperature=1.0, seed=seed, max_tokens=120,
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}})
        assert reply.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(reply.choices[0].message.content), schema)


def test_json_object_response_format(client):
    reply = client.chat.completions.create(model=MODEL, messages=ask("JSON please."), temperature=0, max_tokens=40,
                                           response_format={"type": "json_object"}, logprobs=True, top_logprobs=2)
    content = reply.choices[0].message.content
    # whatever the (random) model wants, the text stays inside the language of JSON objects...
    language = regex.compile(build_regex_from_schema(json.dumps(ANY_JSON_OBJECT, sort_keys=True), r"[ ]?"))
    assert content.startswith("{") and language.fullmatch(content, partial=True)
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
    # ...because every other token was masked: the first step had exactly one choice, "{"
    first = reply.choices[0].logprobs.content[0]
    assert first.token == "{" and first.logprob == pytest.approx(0.0, abs=1e-6)
    assert first.top_logprobs[1].logprob == -9999.0  # a forbidden token, reported without -Infinity


def test_completions(client, engine):
    prompt = "The cat"
    ids = engine.tokenizer.encode(prompt)
    expected = engine.generate([ids], SamplingParams(max_tokens=12, temperature=0.0))[0]
    reply = client.completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0, logprobs=2)
    choice = reply.choices[0]
    assert choice.text == expected.text and reply.usage.completion_tokens == expected.completion_tokens
    assert reply.usage.prompt_tokens == len(ids)
    assert len(choice.logprobs.tokens) == 12 and all(len(t) == 2 for t in choice.logprobs.top_logprobs)
    assert choice.logprobs.text_offset == list(range(12))  # one character per token
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=12, temperature=0)
    assert by_ids.choices[0].text == expected.text
    # a batch of prompts: one choice per prompt, in order
    batch = client.completions.create(model=MODEL, prompt=[prompt, "A dog"], max_tokens=12, temperature=0)
    assert [c.index for c in batch.choices] == [0, 1] and batch.choices[0].text == expected.text
    assert batch.usage.prompt_tokens == len(ids) + len("A dog")
    streamed = client.completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == expected.text


def test_32_concurrent_streams_get_their_own_replies(server, engine):
    prompts = [ask(f"Question {i}: what is {i} times {i + 1}?") for i in range(32)]
    expected = [reference(engine, p, 24)[0] for p in prompts]

    async def main():
        aclient = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)

        async def one(messages):
            stream = await aclient.chat.completions.create(model=MODEL, messages=messages, temperature=0,
                                                           max_tokens=24, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        try:
            return await asyncio.gather(*(one(p) for p in prompts))
        finally:
            await aclient.close()

    got = asyncio.run(main())
    assert got == expected
    assert len(set(expected)) > 1  # the prompts really have different replies
    wait_idle(server)


def test_a_client_that_disconnects_frees_its_slot(server, engine):
    """Streamed: the client hangs up mid-reply; the server notices and the request leaves the engine.

    The tiny model writes its 300 tokens in a fraction of a second, so "mid-reply" is made certain:
    after the first event the server is held (stopped), and if what it had sent by then already
    holds the whole reply, that try does not count and the test asks again."""
    assert reference(engine, ask("Talk forever."), 300)[2] == 300  # left alone, it would run for 300 tokens
    body = json.dumps({"model": MODEL, "messages": ask("Talk forever."), "temperature": 0, "max_tokens": 300, "stream": True})
    host, port = server.url.removeprefix("http://").split(":")
    for _ in range(20):
        before = wait_idle(server)["disconnects"]
        with socket.create_connection((host, int(port))) as connection:
            connection.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
                               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
            received = b""
            while b"data: " not in received:  # generating now
                chunk = connection.recv(65536)
                assert chunk, f"the server closed the connection: {received!r}"
                received += chunk
            with held(server):
                connection.setblocking(False)
                try:  # everything the server sent before it stopped is in our socket now
                    while chunk := connection.recv(65536):
                        received += chunk
                except BlockingIOError:
                    pass
                connection.close()  # the client goes away while the reply is unfinished (or finished: try again)
            if b"[DONE]" not in received:
                break
    else:
        pytest.fail("the whole reply always came before the server could be held")
    # the connection was closed mid-stream: the request must leave the engine, counted as a disconnect
    wait_idle(server, until=lambda health: health["disconnects"] == before + 1)


def test_a_client_that_leaves_before_a_whole_reply_frees_its_slots(server, engine):
    """Not streamed: the client sends its request and hangs up; all n=4 replies are cancelled."""
    assert reference(engine, ask("Talk forever."), 450)[2] == 450
    before = httpx.get(server.url + "/health").json()["disconnects"]
    body = json.dumps({"model": MODEL, "messages": ask("Talk forever."), "temperature": 0, "max_tokens": 450, "n": 4})
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
                           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
        deadline = time.monotonic() + 30
        while httpx.get(server.url + "/health").json()["running"] < 4:  # all four are generating
            assert time.monotonic() < deadline
            time.sleep(0.01)
    wait_idle(server, until=lambda health: health["disconnects"] == before + 1)
