"""Property: whatever request body a client sends, `groklm serve` answers 200 or a 4xx in
OpenAI's error shape, never a 5xx, and goes on serving.

A body is drawn in two steps: a plausible request (legal values, the extreme ones included:
a temperature of 1e-300, a top_p of 5e-324, tools with random parameter schemas, forced tool
calls, response formats), then up to two of its fields replaced by anything at all (the wrong
type, NaN and Infinity, huge integers, nesting where a scalar goes, an unknown field). So a
good share of the requests reach the engine, grammars and tool parsing, and the rest probe
validation. Replies are a few tokens of the tiny shared server: 300 examples take seconds.
The server's resident memory may not grow by more than GROWTH_MB over a property's examples.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from helpers.runs import ASCII
from helpers.servers import MODEL, assert_error, chat_body

EXAMPLES = 300
JSON_TYPES = ["null", "boolean", "object", "array", "number", "string", "integer"]


def weighted(*choices: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """One of the strategies, each chosen in proportion to its weight."""
    return st.sampled_from([strategy for weight, strategy in choices for _ in range(weight)]).flatmap(lambda strategy: strategy)


# The server's tokenizer knows these characters only: others are 400s.
TEXT = weighted((9, st.text(alphabet=ASCII, max_size=12)), (1, st.text(max_size=4)))
NAME = st.from_regex(r"[a-z]{1,5}", fullmatch=True)

anything = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=6),
    st.lists(st.integers(-3, 120), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
schemas = st.recursive(
    st.fixed_dictionaries({"type": st.sampled_from([*JSON_TYPES, "banana"]) | st.lists(st.sampled_from(JSON_TYPES), max_size=2)},
                          optional={"minimum": st.integers(-1000, 1000), "maximum": st.integers(-1000, 1000),
                                    "maxLength": st.integers(0, 8), "enum": st.lists(st.integers(0, 9) | TEXT, max_size=3)}),
    lambda inner: st.fixed_dictionaries({"type": st.just("object")},
                                        optional={"properties": st.dictionaries(NAME, inner, max_size=3),
                                                  "required": st.lists(NAME, max_size=2)})
    | st.fixed_dictionaries({"type": st.just("array"), "items": inner}) | st.fixed_dictionaries({"anyOf": st.lists(inner, max_size=2)}),
    max_leaves=6,
)
tools = st.lists(st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
    {"name": st.sampled_from(["f", "get_weather"])},
    optional={"description": TEXT, "parameters": weighted((6, schemas), (1, anything))})}), max_size=2)
tool_choice = st.sampled_from(["none", "auto", "required"]) | st.fixed_dictionaries(
    {"type": st.just("function"),
     "function": weighted((6, st.fixed_dictionaries({"name": st.sampled_from(["f", "get_weather", "g"])})), (1, anything))})
call = st.fixed_dictionaries({"id": st.sampled_from(["c1", "c2"]), "type": st.just("function"), "function": st.fixed_dictionaries(
    {"name": st.just("f"), "arguments": st.sampled_from(["{}", '{"a": 1}', "[", "5"])})})
message = weighted(
    (12, st.fixed_dictionaries({"role": st.sampled_from(["system", "developer", "user", "user"]), "content": TEXT})),
    (1, st.fixed_dictionaries({"role": st.just("user"), "content": st.lists(
        st.fixed_dictionaries({"type": st.sampled_from(["text", "text", "image_url"]), "text": TEXT}), max_size=2)})),
    (1, st.fixed_dictionaries({"role": st.just("assistant")}, optional={"content": TEXT, "tool_calls": st.lists(call, max_size=2)})),
    (1, st.fixed_dictionaries({"role": st.just("tool"), "tool_call_id": st.sampled_from(["c1", "c2"]), "content": TEXT})),
)
response_format = st.sampled_from([
    {"type": "text"}, {"type": "json_object"}, {"type": "json_schema"}, {"type": "xml"},
    {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}},
    {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "banana"}}},
    {"type": "json_schema", "json_schema": {"name": "", "schema": {}}},
    {"type": "json_schema", "json_schema": {"name": "n", "schema": {"enum": ["a", "b"]}, "strict": True}},
])
TINY = st.sampled_from([1e-300, 5e-324, 1e-30])
# Always a few tokens: an absent max_tokens means "the rest of the context", seconds per example.
max_tokens = weighted((6, st.integers(1, 6)), (1, st.sampled_from([10**9, 2**70, 500])))
SAMPLING = {
    "temperature": st.floats(0, 2) | TINY, "top_p": st.floats(0, 1, exclude_min=True) | TINY, "top_k": st.integers(1, 120),
    "n": st.integers(1, 3), "seed": st.integers(-(2**63), 2**63 - 1), "stop": TEXT | st.lists(TEXT, max_size=5),
    "stream": st.booleans(), "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "frequency_penalty": st.floats(-2, 2), "presence_penalty": st.floats(-2, 2), "user": TEXT,
}
CHAT = {**SAMPLING, "max_completion_tokens": max_tokens, "logprobs": st.booleans(), "top_logprobs": st.integers(0, 20),
        "tools": tools, "tool_choice": tool_choice, "parallel_tool_calls": st.booleans(), "response_format": response_format,
        "metadata": st.dictionaries(TEXT, TEXT, max_size=2), "store": st.booleans()}
COMPLETION = {**SAMPLING, "logprobs": st.integers(0, 5)}
prompts = TEXT | st.lists(st.integers(0, 98), min_size=1, max_size=4) | st.lists(TEXT, min_size=1, max_size=3) \
    | st.lists(st.lists(st.integers(0, 98), min_size=1, max_size=3), min_size=1, max_size=2)


def spots(value, path: tuple = ()):
    """The path of every value nested in `value` (keys and list indexes), `value`'s own first."""
    yield path
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from spots(child, (*path, key))


@st.composite
def bodies(draw, required: dict, optional: dict) -> dict:
    """A plausible body, then up to two values replaced by anything: a field (maybe one it did
    not have, maybe an unknown one), or a value nested anywhere inside one."""
    # A copy: sampled_from hands out its own objects (the response formats above), and changing
    # one in place would change what later examples draw, which hypothesis rightly calls flaky.
    body = copy.deepcopy(draw(st.fixed_dictionaries(required, optional=optional)))
    for _ in range(draw(st.integers(0, 2))):
        fields = [(name,) for name in [*required, *optional, "temprature", "echo"]]
        *parents, last = draw(st.sampled_from(fields) | st.sampled_from(list(spots(body))[1:]))
        target = body
        for key in parents:
            target = target[key]
        target[last] = draw(anything)
    return body


chat_bodies = bodies({"model": st.just(MODEL), "messages": st.lists(message, min_size=1, max_size=3), "max_tokens": max_tokens}, CHAT)
completion_bodies = bodies({"model": st.just(MODEL), "prompt": prompts, "max_tokens": max_tokens}, COMPLETION)


def assert_answered(response: httpx.Response) -> None:
    """200 with a whole reply or a clean stream, or a 4xx in OpenAI's shape: never a 5xx."""
    assert response.status_code < 500, response.text
    event(f"status {response.status_code}")  # `pytest --hypothesis-show-statistics` shows the mix
    if response.status_code != 200:
        event(f"refused: {assert_error(response, response.status_code)['param']}")
    elif response.headers["content-type"].startswith("text/event-stream"):
        events = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]" and all("error" not in json.loads(e) for e in events[:-1]), response.text
    else:
        assert response.json()["choices"], response.text


def post(http: httpx.Client, route: str, body: dict) -> httpx.Response:
    # json.dumps writes NaN and Infinity as bare words, as a careless client in another language may
    return http.post(route, content=json.dumps(body), headers={"Content-Type": "application/json"})


FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GROWTH_MB = 256  # what the server's resident memory may grow by over one property's examples


def resident_mb(server) -> float:
    """The server process's resident memory (Linux /proc), in MiB."""
    status = Path(f"/proc/{server.process.pid}/status")
    if not status.exists():
        pytest.skip("no /proc on this system: the server's memory cannot be read")
    kb = next(line.split()[1] for line in status.read_text().splitlines() if line.startswith("VmRSS:"))
    return int(kb) / 1024


def fuzz(server, http, route: str, bodies: st.SearchStrategy, normal: dict) -> None:
    """Every drawn body is answered (assert_answered) and a normal request after it too; the
    server's memory stays within GROWTH_MB of where it started."""

    @FUZZ
    @given(body=bodies)
    def every_body(body):
        assert_answered(post(http, route, body))
        after = http.post(route, json=normal)
        assert after.status_code == 200, (after.status_code, after.text, http.get("/health").json(), body)

    before = resident_mb(server)
    every_body()
    assert resident_mb(server) - before < GROWTH_MB


def test_any_chat_body_is_answered_and_the_server_goes_on(server, http):
    fuzz(server, http, "/v1/chat/completions", chat_bodies, chat_body())


def test_any_completion_body_is_answered_and_the_server_goes_on(server, http):
    fuzz(server, http, "/v1/completions", completion_bodies, {"model": MODEL, "prompt": "hi", "max_tokens": 2})
