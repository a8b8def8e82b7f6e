"""`groklm serve` never crashes on bad input: every client mistake gets an OpenAI-style 4xx.

Raw HTTP (httpx) against the shared test server (with an API key, 32 slots, no waiting line,
64 KiB bodies), plus an in-process app whose engine has a bug, for the generic 500.
"""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from groklm.cli.main import build_parser
from groklm.serve.api import create_app
from groklm.tokenizer.char import CharTokenizer

from helpers.servers import KEY, MAX_BATCH, MAX_BODY, MODEL, assert_error, wait_idle
from helpers.servers import chat_body as chat

# ---- 401 ----------------------------------------------------------------------------------------


def test_the_key_is_required_on_api_routes(server):
    url = server.url + "/v1/chat/completions"
    for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"},
                    {"Authorization": f"Bearer {KEY}x"}, {"Authorization": KEY}]:
        error = assert_error(httpx.post(url, json=chat(), headers=headers), 401, "API key")
        assert error["code"] == "invalid_api_key"
    assert_error(httpx.get(server.url + "/v1/models"), 401)
    assert httpx.post(url, json=chat(), headers=server.headers).status_code == 200
    # the page and the health check stay open
    assert httpx.get(server.url + "/health").status_code == 200 and httpx.get(server.url + "/").status_code == 200


# ---- 400 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fields, param, says", [
    ({"temperature": 2.5}, "temperature", "less than or equal to 2"),
    ({"temperature": -0.1}, "temperature", "greater than or equal to 0"),
    ({"top_p": 0}, "top_p", "greater than 0"),
    ({"n": 0}, "n", ""),
    ({"n": 99}, "n", ""),
    ({"max_tokens": 0}, "max_tokens", ""),
    ({"frequency_penalty": 3}, "frequency_penalty", ""),
    ({"seed": 2**70}, "seed", ""),
    ({"stop": ["a", "b", "c", "d", "e"]}, None, "up to 4"),
    ({"stop": [""]}, None, "non-empty"),
    ({"top_logprobs": 3}, None, "needs logprobs"),
    ({"top_logprobs": 21, "logprobs": True}, "top_logprobs", ""),
    ({"model": "gpt-4o"}, "model", "not served here"),
    ({"temprature": 1}, "temprature", "unrecognized"),
    ({"messages": []}, "messages", ""),
    ({"messages": [{"role": "wizard", "content": "x"}]}, None, "role 'wizard'"),
    ({"messages": [{"role": "user", "content": 5}]}, None, "content must be"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, None, "text only"),
    ({"messages": [{"role": "tool", "tool_call_id": "c1", "content": "1"}]}, None, "tool_call_id"),
    ({"messages": [{"role": "user", "content": "caf\u00e9"}]}, None, "not in this character vocabulary"),
    ({"messages": [{"role": "user", "content": "x" * 600}]}, None, "context is 512"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function",
      "function": {"name": "g"}}}, None, "not in tools"),
    ({"tool_choice": "required"}, None, "non-empty tools"),
    ({"tools": [{"type": "function", "function": {"name": "no spaces"}}]}, None, "letters, digits"),
    ({"response_format": {"type": "xml"}}, "response_format", ""),
    ({"response_format": {"type": "json_schema"}}, None, "needs a 'json_schema'"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/nowhere"}}}},
     None, "unsupported JSON schema"),
    ({"stream": "yes please"}, "stream", ""),
])
def test_invalid_chat_parameters_are_400(http, fields, param, says):
    error = assert_error(http.post("/v1/chat/completions", json=chat(**fields)), 400, says)
    if param:
        assert error["param"] == param


@pytest.mark.parametrize("fields, says", [
    ({"prompt": ""}, "empty"),
    ({"prompt": []}, "empty"),
    ({"prompt": [1, 2, 10**6]}, "token ids must be in"),
    ({"prompt": [-1]}, "token ids must be in"),
    ({"prompt": "x" * 600}, "context is 512"),
    ({"prompt": {"text": "hi"}}, ""),
    ({"prompt": ["a"] * 40}, "at most 32"),
    ({"logprobs": 6}, ""),
    ({"echo": True}, "unrecognized"),
])
def test_invalid_completion_parameters_are_400(http, fields, says):
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 2, **fields}
    assert_error(http.post("/v1/completions", json=body), 400, says)


@pytest.mark.parametrize("content, says", [
    (b"{not json", "not valid JSON"), (b"", "JSON object body"), (b"[1, 2]", "JSON object"),
    (b"null", ""), (b'"text"', ""), (b"\xff\xfe\x00", ""), (b'{"model": "tiny", "messages": [', "not valid JSON"),
])
def test_malformed_bodies_are_400(http, content, says):
    response = http.post("/v1/chat/completions", content=content, headers={"Content-Type": "application/json"})
    assert_error(response, 400, says)


def test_unknown_routes_and_methods(http):
    assert_error(http.get("/v1/nothing"), 404)
    assert_error(http.delete("/v1/chat/completions"), 405)
    assert_error(http.get("/v1/models/gpt-4o"), 404)


# ---- 413 ----------------------------------------------------------------------------------------


def test_oversized_bodies_are_413(http):
    big = chat(messages=[{"role": "user", "content": "a" * MAX_BODY}])
    assert_error(http.post("/v1/chat/completions", json=big), 413, "limit")
    # no Content-Length (chunked upload): the limit counts what arrives

    def chunks():
        payload = json.dumps(big).encode()
        for i in range(0, len(payload), 4096):
            yield payload[i : i + 4096]

    assert_error(http.post("/v1/chat/completions", content=chunks()), 413, "limit")
    # just under the limit is fine (and then 400: the prompt is longer than the context)
    small = chat(messages=[{"role": "user", "content": "a" * (MAX_BODY - 200)}])
    assert_error(http.post("/v1/chat/completions", json=small), 400, "context")


# ---- 429 ----------------------------------------------------------------------------------------


def test_a_full_engine_answers_429_then_recovers(server, http):
    """MAX_BATCH streams fill every slot (no waiting line): the next request is refused."""
    body = chat(max_tokens=400, temperature=0, stream=True)

    async def fill_then_ask():
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=60) as client:
            async with asyncio.TaskGroup() as group:
                ready = asyncio.Event()
                opened = []

                async def hold():
                    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                        assert response.status_code == 200
                        opened.append(response)
                        if len(opened) == MAX_BATCH:
                            ready.set()
                        await release.wait()

                release = asyncio.Event()
                for _ in range(MAX_BATCH):
                    group.create_task(hold())
                await ready.wait()
                refused = await client.post("/v1/chat/completions", json=chat())
                refused_stream = await client.post("/v1/chat/completions", json=chat(stream=True))
                release.set()
        return refused, refused_stream

    refused, refused_stream = asyncio.run(fill_then_ask())
    for response in (refused, refused_stream):
        assert_error(response, 429, "busy")
        assert response.headers["retry-after"] == "1"
    wait_idle(server)
    assert http.post("/v1/chat/completions", json=chat()).status_code == 200


# ---- no 500s --------------------------------------------------------------------------------------

WEIRD = [None, True, -1, 0, 1, 2.5, 1e308, -2**70, "", "x", "\u0000", [], [None], [1, "a"], {}, {"a": {"b": []}}]
FIELDS = ["model", "messages", "temperature", "top_p", "top_k", "n", "stop", "seed", "max_tokens",
          "max_completion_tokens", "frequency_penalty", "presence_penalty", "logprobs", "top_logprobs", "stream",
          "stream_options", "tools", "tool_choice", "response_format", "parallel_tool_calls", "user"]


def test_odd_values_in_every_field_never_give_500(http):
    statuses = set()
    for field in FIELDS:
        for value in WEIRD:
            body = chat(**{field: value})
            if field not in ("max_tokens", "max_completion_tokens"):
                body["max_tokens"] = 2
            response = http.post("/v1/chat/completions", json=body)
            assert response.status_code in (200, 400), (field, value, response.text)
            if response.status_code == 400:
                assert_error(response, 400)
            statuses.add(response.status_code)
    assert statuses == {200, 400}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(max_size=200),
                      st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                                   lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                                   max_leaves=10).map(lambda v: json.dumps(v).encode())))
def test_random_bodies_never_give_500(http, body):
    for route in ("/v1/chat/completions", "/v1/completions"):
        response = http.post(route, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, response.text
        assert_error(response, 400)


def test_a_server_bug_is_a_generic_500_without_details():
    """An engine that crashes: the client gets a bare 500, no traceback or exception text."""
    class Broken:
        def __init__(self):
            self.engine = type("E", (), {"tokenizer": CharTokenizer("abcdefghijklmnopqrstuvwxyz \n"),
                                         "block_size": 64, "active": {}, "waiting": []})()
            self.capacity, self.in_flight = 4, 0

        async def stream(self, prompt, params, constraint=None):
            raise RuntimeError("secret internal detail")
            yield

        def shutdown(self):
            pass

    async def main():
        transport = httpx.ASGITransport(app=create_app(Broken(), "m"), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            whole = await client.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
            streamed = await client.post("/v1/chat/completions", json={"model": "m", "stream": True,
                                                                       "messages": [{"role": "user", "content": "hi"}]})
        return whole, streamed

    for response in asyncio.run(main()):
        error = assert_error(response, 500, "internal server error")
        assert "secret" not in response.text and "Traceback" not in response.text and error["type"] == "server_error"


def test_the_server_binds_loopback_by_default():
    args = build_parser().parse_args(["serve", "some/run"])
    assert args.host == "127.0.0.1" and args.port == 8000


def test_concurrent_bad_and_good_requests_leave_the_server_healthy(server, http):
    def worker(results):
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as client:
            for body in (chat(), chat(temperature=9), b"{", chat(stream=True)):
                kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
                results.append(client.post("/v1/chat/completions", **kwargs).status_code)

    results: list[int] = []
    threads = [threading.Thread(target=worker, args=(results,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted([200, 400, 400, 200] * 8)
    assert wait_idle(server)["status"] == "ok"
