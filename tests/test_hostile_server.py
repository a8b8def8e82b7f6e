"""Hostile and careless requests against `groklm serve`: each one gets its answer or a 4xx in
OpenAI's error shape naming the field, and the server still serves a normal request after it.

Raw HTTP (httpx) against the shared test server (tests/helpers/servers.py). The cases are the
ones issue 17 found (a temperature of 1e-300 failing every request in flight, malformed
tool_choice giving 500s, loose types accepted with 200), and more of the same kinds.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys

import httpx
import pytest
import uvicorn

from groklm.cli.main import main
from groklm.infer.engine import AsyncEngine, Engine, SamplingParams
from groklm.runs import load
from groklm.serve.api import create_app
from groklm.tokenizer.base import IM_END, Conventions
from groklm.tokenizer.chat import render_prompt

from helpers.models import Poisoned
from helpers.runs import char_tokenizer, tiny_run
from helpers.servers import BLOCK_SIZE, MODEL, assert_error, chat_body, wait_idle

CHAT = "/v1/chat/completions"
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def assert_still_serves(http: httpx.Client) -> None:
    """A plain request right after a hostile one is answered as usual."""
    response = http.post(CHAT, json=chat_body())
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["finish_reason"] in ("stop", "length")


def reply(http: httpx.Client, **fields) -> str:
    response = http.post(CHAT, json=chat_body(**fields))
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


# ---- 1. one request never fails everyone's ------------------------------------------------------


@pytest.mark.parametrize("fields", [
    {"temperature": 1e-300}, {"top_p": 1e-300}, {"temperature": 5e-324}, {"temperature": 1e-300, "top_p": 1e-300},
    {"temperature": 2.0, "top_p": 1e-300}, {"temperature": 1e-30, "top_k": 1},
], ids=str)
def test_extreme_legal_sampling_values_behave_as_greedy(http, fields):
    """Legal values, so no 400: a temperature or top_p next to 0 is greedy decoding."""
    greedy = reply(http, temperature=0, max_tokens=16)
    assert reply(http, max_tokens=16, **fields) == greedy
    assert_still_serves(http)


@pytest.mark.parametrize("fields", [
    {"seed": 2**63 - 1, "n": 8, "temperature": 1.0}, {"seed": -(2**63), "n": 8},
    {"logprobs": True, "top_logprobs": 20, "temperature": 1e-300},
    {"frequency_penalty": 2, "presence_penalty": -2, "temperature": 1e-300},
    {"stop": ["\u0000", "\n", "a" * 1000, "\U0001f642"]}, {"top_k": 2**70}, {"top_k": 1, "top_p": 1e-300, "temperature": 2},
    {"n": 8, "stream": True, "temperature": 5e-324}, {"response_format": {"type": "json_object"}, "temperature": 1e-300},
    {"stream": True, "stream_options": {"include_usage": True}, "n": 2, "top_p": 5e-324},
], ids=str)
def test_legal_extremes_together_are_answered(http, fields):
    response = http.post(CHAT, json=chat_body(max_tokens=6, **fields))
    assert response.status_code == 200, response.text
    if fields.get("stream"):
        assert '"error"' not in response.text and response.text.rstrip().endswith("data: [DONE]")
    else:
        assert len(response.json()["choices"]) == fields.get("n", 1)
    assert_still_serves(http)


def test_poisoned_requests_among_eight_healthy_ones_fail_nobody(server, http):
    """Eight long streams are generating when four requests with near-zero temperature or top_p
    join the batch: all twelve are answered, the eight exactly as they are alone."""
    healthy = [chat_body(messages=[{"role": "user", "content": f"story {i}"}], max_tokens=400, temperature=0)
               for i in range(8)]
    alone = [reply(http, **body) for body in healthy]
    assert all(len(text) > 200 for text in alone)  # long enough to be running when the others arrive
    poisoned = [chat_body(temperature=1e-300, max_tokens=16), chat_body(top_p=1e-300, max_tokens=16),
                chat_body(temperature=1e-300, top_p=1e-300, max_tokens=16, stream=True),
                chat_body(temperature=5e-324, n=3, max_tokens=16)]
    greedy = reply(http, temperature=0, max_tokens=16)

    async def together():
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=60) as client:
            streaming, poisons_answered = asyncio.Event(), asyncio.Event()
            opened, closed_early = [], []

            async def stream(body) -> str:
                text = []
                async with client.stream("POST", CHAT, json={**body, "stream": True}) as response:
                    assert response.status_code == 200
                    async for line in response.aiter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        event = json.loads(line[len("data: "):])
                        assert "error" not in event, event
                        if not text:
                            opened.append(body)
                            if len(opened) == len(healthy):
                                streaming.set()
                        text += [c["delta"].get("content") or "" for c in event["choices"]]
                if not poisons_answered.is_set():
                    closed_early.append(body)
                return "".join(text)

            async def poison(body) -> httpx.Response:
                async with client.stream("POST", CHAT, json=body) as response:
                    await response.aread()
                    return response

            async def poisons() -> list[httpx.Response]:
                await streaming.wait()  # every healthy stream is generating
                answers = await asyncio.gather(*map(poison, poisoned))
                poisons_answered.set()
                return answers

            streamed, answers = await asyncio.gather(asyncio.gather(*map(stream, healthy)), poisons())
            return streamed, answers, closed_early

    streamed, answers, closed_early = asyncio.run(together())
    assert len(closed_early) < len(healthy)  # the poisoned requests did share the batch with healthy ones
    assert streamed == alone
    for response in answers:
        assert response.status_code == 200, response.text
        if response.headers["content-type"].startswith("text/event-stream"):
            assert '"error"' not in response.text and response.text.rstrip().endswith("data: [DONE]")
        else:
            assert all(c["message"]["content"] == greedy for c in response.json()["choices"])
    wait_idle(server)
    assert_still_serves(http)


def test_a_request_whose_logits_turn_to_nan_fails_alone_saying_so(server):
    """In process, with a model that turns one request's logits into NaN after a few tokens: that
    request gets a 500 that says what happened (streamed: an error event after its first text),
    and the next request is answered exactly as by the healthy model."""
    model, tokenizer = load(server.run)
    body = chat_body(max_tokens=40, temperature=0)
    prompt = render_prompt(tokenizer, body["messages"])
    expected = Engine(model, tokenizer, max_batch=1).generate([prompt], SamplingParams(max_tokens=40, temperature=0))[0].text
    poisoned = Poisoned(model, after=3)
    engine = AsyncEngine(poisoned.aim(Engine(poisoned, tokenizer, max_batch=4), 0))  # the first request

    async def main():
        transport = httpx.ASGITransport(app=create_app(engine, MODEL), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            whole = await client.post(CHAT, json=body)
            poisoned.aim(engine.engine, 1)  # the second
            poisoned.seen = 0
            streamed = await client.post(CHAT, json={**body, "stream": True})
            healthy = await client.post(CHAT, json=body)
        return whole, streamed, healthy

    try:
        whole, streamed, healthy = asyncio.run(main())
    finally:
        engine.shutdown()
    error = assert_error(whole, 500, "not finite numbers")
    assert error["code"] == "non_finite_logits" and error["type"] == "server_error"
    assert streamed.status_code == 200
    events = [json.loads(line[len("data: "):]) for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert any(e.get("choices") and e["choices"][0]["delta"].get("content") for e in events[:-1])  # its first tokens
    assert "not finite numbers" in events[-1]["error"]["message"]
    assert healthy.status_code == 200 and healthy.json()["choices"][0]["message"]["content"] == expected


# ---- 3. malformed tool_choice and impossible schemas are 400s, not 500s --------------------------


@pytest.mark.parametrize("tool_choice", [
    {"type": "function"}, {"type": "function", "function": "get_weather"}, {"type": "function", "function": None},
    {"type": "function", "function": {}}, {"type": "function", "function": {"name": 5}},
    {"function": {"name": "get_weather"}}, {"type": "tool", "function": {"name": "get_weather"}},
    {"type": "function", "function": ["get_weather"]}, {}, "sometimes", ["auto"], 1, True,
], ids=str)
def test_a_malformed_tool_choice_is_400_naming_it(http, tool_choice):
    error = assert_error(http.post(CHAT, json=chat_body(tools=[WEATHER], tool_choice=tool_choice)), 400)
    assert error["param"] == "tool_choice"
    assert_still_serves(http)


@pytest.mark.parametrize("schema, says", [
    ({"type": "object", "properties": {"n": {"type": "integer", "minimum": "@1e400"}}}, ""),
    ({"type": "object", "properties": {"n": {"type": "integer", "minimum": 10**400}}}, ""),
    ({"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 0}}}, ""),
    ({"type": "object", "properties": {"n": {"type": "integer", "minimum": 5, "maximum": 1}}}, ""),
    ({"type": "object", "properties": {"n": {"enum": []}}}, "enum"),
    ({"type": "banana"}, "banana"),
], ids=["minimum-1e400", "minimum-10**400", "multipleOf-0", "minimum>maximum", "empty-enum", "banana"])
def test_impossible_response_format_schemas_are_400(http, schema, says):
    body = chat_body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    error = assert_error(post_raw(http, body, **{"1e400": "1e400"}), 400, says)
    assert error["param"] == "response_format"
    assert_still_serves(http)


# ---- 4. strict types: nothing is coerced ------------------------------------------------------------


@pytest.mark.parametrize("fields, param", [
    ({"max_tokens": "4"}, "max_tokens"), ({"max_tokens": True}, "max_tokens"), ({"max_tokens": 1e9}, "max_tokens"),
    ({"max_tokens": 4.0}, "max_tokens"), ({"max_completion_tokens": "4"}, "max_completion_tokens"),
    ({"temperature": True}, "temperature"), ({"temperature": "0.5"}, "temperature"), ({"top_p": "1"}, "top_p"),
    ({"n": "2"}, "n"), ({"n": True}, "n"), ({"n": 2.0}, "n"), ({"top_k": 1.5}, "top_k"), ({"seed": "7"}, "seed"),
    ({"seed": 1.5}, "seed"), ({"stream": "yes"}, "stream"), ({"stream": 1}, "stream"), ({"stream": "true"}, "stream"),
    ({"logprobs": "true"}, "logprobs"), ({"top_logprobs": "2", "logprobs": True}, "top_logprobs"),
    ({"parallel_tool_calls": "false"}, "parallel_tool_calls"), ({"stop": 5}, "stop"), ({"stop": [1]}, "stop"),
    ({"stream_options": {"include_usage": "yes"}}, "stream_options"), ({"stream_options": {"extra": 1}}, "stream_options"),
    ({"frequency_penalty": False}, "frequency_penalty"), ({"metadata": {"k": 1}}, "metadata"), ({"user": 5}, "user"),
    ({"model": 5}, "model"), ({"response_format": {"type": "json_object", "json_schema": 1}}, "response_format"),
], ids=str)
def test_loose_types_are_400_naming_the_field(http, fields, param):
    error = assert_error(http.post(CHAT, json=chat_body(**fields)), 400, param)
    assert error["param"] == param
    assert_still_serves(http)


@pytest.mark.parametrize("fields, says", [
    ({"max_tokens": "4"}, "max_tokens: Input should be a valid integer, got a string"),
    ({"max_tokens": True}, "max_tokens: Input should be a valid integer, got a boolean"),
    ({"n": 2.0}, "n: Input should be a valid integer, got a number"),
    ({"stream": "yes"}, "stream: Input should be a valid boolean, got a string"),
    ({"temperature": [1]}, "temperature: Input should be a valid number, got an array"),
])
def test_a_wrong_type_says_what_came_instead(http, fields, says):
    assert_error(http.post(CHAT, json=chat_body(**fields)), 400, says)


def post_raw(http: httpx.Client, body: dict, **literals: str) -> httpx.Response:
    """POST `body` with each string value "@name" replaced by the JSON text literals[name]: what
    a client in another language can send and Python's json.dumps cannot (NaN, 1e400, deep nesting)."""
    text = json.dumps(body)
    for name, literal in literals.items():
        text = text.replace(json.dumps(f"@{name}"), literal)
    return http.post(CHAT, content=text, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("literal, param", [("NaN", "temperature"), ("Infinity", "temperature"),
                                            ("-Infinity", "frequency_penalty"), ("1e400", "top_p")])
def test_non_numbers_python_json_lets_through_are_400(http, literal, param):
    """Python's JSON parser reads NaN, Infinity and 1e400 (as inf); none is a number a request may hold."""
    response = post_raw(http, chat_body(**{param: "@x"}), x=literal)
    assert assert_error(response, 400)["param"] == param
    assert_still_serves(http)


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_beyond_the_context_is_400_as_openai_says_it(http, field):
    prompt_tokens = http.post(CHAT, json=chat_body()).json()["usage"]["prompt_tokens"]
    room = BLOCK_SIZE - prompt_tokens

    def asking(tokens: int) -> dict:
        body = chat_body(temperature=0)
        del body["max_tokens"]
        return {**body, field: tokens}

    # The whole context is allowed (the reply ends where the context ends) ...
    assert http.post(CHAT, json=asking(room)).status_code == 200
    # ... one token more, or a billion, is not.
    for asked in (room + 1, 10**9):
        body = asking(asked)
        error = assert_error(http.post(CHAT, json=body), 400, f"maximum context length is {BLOCK_SIZE} tokens")
        assert f"you requested {prompt_tokens + asked} tokens ({prompt_tokens} in the messages, {asked} in the completion)" \
            in error["message"]
        assert error["param"] == field and error["code"] == "context_length_exceeded"
    assert_still_serves(http)


def test_completions_max_tokens_beyond_the_context_is_400(http):
    body = {"model": MODEL, "prompt": ["hello", "hello there"], "max_tokens": BLOCK_SIZE - 5}
    error = assert_error(http.post("/v1/completions", json=body), 400, "in the prompt")
    assert error["param"] == "max_tokens" and "11 in the prompt" in error["message"]
    for prompt in ("x", [1, 2], True, [True], ["x", 1], [[1.0]]):
        response = http.post("/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 2})
        assert response.status_code == (200 if prompt in ("x", [1, 2]) else 400), (prompt, response.text)
    assert_still_serves(http)


@pytest.mark.parametrize("parameters, says", [
    ({"type": "banana"}, "tools[0].function.parameters.type: 'banana' is not a JSON Schema type"),
    ({"type": "object", "properties": {"city": {"type": "banana"}}}, "parameters.properties.city.type"),
    ({"type": "object", "properties": {"c": {"type": ["string", "banana"]}}}, "'banana'"),
    ({"type": "object", "properties": {"c": {"anyOf": [{"type": "string"}, {"type": 7}]}}}, "properties.c.anyOf[1].type"),
    ({"type": "object", "properties": {"c": {"type": "array", "items": {"type": "date"}}}}, "items.type"),
    ({"type": "object", "properties": {"c": {"type": []}}}, "not a JSON Schema type"),
    ({"type": "object", "properties": {"c": {"enum": []}}}, "enum must be a non-empty list"),
    ({"type": "object", "properties": ["city"]}, "properties must be an object"),
    ({"type": "object", "properties": {"c": "string"}}, "must be a JSON schema"),
    ({"type": "object", "required": "city"}, "required must be a list"),
], ids=str)
@pytest.mark.parametrize("tool_choice", ["auto", "required"])
def test_a_tool_parameter_schema_no_json_schema_allows_is_400(http, parameters, says, tool_choice):
    """OpenAI refuses these whatever tool_choice says; so do we (not only when a call is forced)."""
    tool = {"type": "function", "function": {"name": "f", "parameters": parameters}}
    error = assert_error(http.post(CHAT, json=chat_body(tools=[tool], tool_choice=tool_choice)), 400, says)
    assert error["param"] == "tools"
    assert_still_serves(http)


@pytest.mark.parametrize("depth", [900, 2000])
def test_deeply_nested_schemas_are_a_clear_400(http, depth):
    """A schema 900 levels deep is checked (without recursion); one nested past what the JSON
    parser takes is refused as a body it cannot parse. Neither is a RecursionError and a 500."""
    deep = '{"type": "array", "items": ' * depth + '{"type": "banana"}' + "}" * depth
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": "@deep"}}}}
    response = post_raw(http, chat_body(tools=[tool]), deep=deep)
    assert_error(response, 400, "'banana' is not a JSON Schema type" if depth < 1000 else "")
    assert_still_serves(http)


@pytest.mark.parametrize("fields, param", [
    ({"messages": [{"role": "user", "content": 5}]}, "messages"),
    ({"messages": [{"role": "tool", "tool_call_id": [], "content": "x"}]}, "messages"),  # found by the fuzz: was a 500
    ({"tools": [{"type": "function"}]}, "tools"),
    ({"top_logprobs": 2}, "top_logprobs"),
])
def test_errors_found_after_parsing_name_their_field_too(http, fields, param):
    assert assert_error(http.post(CHAT, json=chat_body(**fields)), 400)["param"] == param


# ---- serve refuses at startup a model it could not chat with --------------------------------------


def serve_refuses(run, monkeypatch, capsys) -> str:
    """`groklm serve RUN` stops before listening, with a message and exit status 1; the message."""
    monkeypatch.setattr(sys, "argv", ["groklm"])
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("serve started instead of refusing the model"))
    with pytest.raises(SystemExit) as exit_:
        main(["serve", str(run), "--port", "0"])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "Traceback" not in err
    return err


def test_serve_refuses_a_model_without_embeddings_for_its_chat_tokens(tmp_path, monkeypatch, capsys):
    """Every chat request would otherwise be a 400 about token ids: refuse at startup, naming the tokens."""
    tokenizer = char_tokenizer()
    run = tiny_run(tmp_path / "run", tokenizer, vocab_size=min(tokenizer.special_tokens.values()))
    err = serve_refuses(run, monkeypatch, capsys)
    assert re.search(r"chat tokens .*<\|im_start\|> \(id \d+\).*vocab_size=96", err), err


def test_serve_refuses_a_chat_template_it_cannot_render(tmp_path, monkeypatch, capsys):
    tokenizer = char_tokenizer().with_conventions(Conventions(eos_token=IM_END, chat_template="{{ messages[0].content }}"))
    err = serve_refuses(tiny_run(tmp_path / "run", tokenizer), monkeypatch, capsys)
    assert "tokenizer.json" in err and "no assistant role" in err, err
