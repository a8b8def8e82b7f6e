"""Property-based fuzz of the JSON-schema subset: every schema compiles or is refused.

Generated schemas mix what users write (objects, arrays, unions, bounds, patterns, formats,
$refs) with what they get wrong or attackers send (impossible ranges, non-positive multipleOf,
empty enums, non-finite numbers, bad regexes, hostile patterns, keywords of the wrong type).
Each one either compiles to a grammar a reply can follow, or raises ConfigError (a 400 from
the server); nothing else, and memory stays bounded. Then the same through a running server:
4xx or 200, never a 5xx.
"""

from __future__ import annotations

import json
import resource
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from groklm.errors import ConfigError
from groklm.infer.constrain import Grammar
from groklm.tokenizer.chat import reply_end_id

from helpers.apps import tokenizer as bpe_tokenizer
from helpers.servers import chat_body, shared_server

MEMORY_MB = 1500  # what the whole fuzz may add to a process's peak resident memory (the tests', the server's)
STEPS = 12  # tokens walked through each grammar that compiles

numbers = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False),
                    st.sampled_from([0, -1, 0.5, 1e-9, 1e300, -1e300, 10**120]))
PATTERNS = ["^[0-9]{5}$", "[a-z]+", "[^\\n]{1,400}", ".*", "\\S+", "[ -~]{0,30}", "(ab", "[a-z\"]{2}", "\\d{2}-\\w",
            "a{5,2}", "[]", "x|", "(?P<n>a)", "\\p{L}+", "[^]a]", "(a{1000}){1000}", "(x{0,200}){0,200}", "[[a-z]&&[^c]]+"]
FORMATS = ["date", "date-time", "time", "email", "uri", "uuid", "nonsense"]
JUNK = [{"type": "banana"}, {"type": 5}, {"type": ["integer", "null"]}, {"type": "integer", "minimum": "x"},
        {"type": "object", "properties": [1, 2]}, {"type": "object", "required": "a"}, {"$ref": "#/nowhere"},
        {"type": "array", "items": [{"type": "integer"}]}, {"anyOf": []}, {"allOf": [{"type": "string"}, {"type": "integer"}]},
        {"type": "integer", "exclusiveMinimum": True}, {"not": {"type": "string"}}, True, False, {"enum": [[], {}]}]


def bounded(kind: str) -> st.SearchStrategy:
    keys = st.sampled_from(["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"])
    return st.dictionaries(keys, numbers, max_size=3).map(lambda extra: {"type": kind, **extra})


def strings() -> st.SearchStrategy:
    extra = st.fixed_dictionaries({}, optional={"minLength": st.integers(-2, 50), "maxLength": st.integers(-2, 500),
                                                "pattern": st.sampled_from(PATTERNS), "format": st.sampled_from(FORMATS)})
    return extra.map(lambda e: {"type": "string", **e})


scalars = st.one_of(st.none(), st.booleans(), st.integers(-100, 100), st.text(max_size=5))
leaves = st.one_of(
    bounded("integer"), bounded("number"), strings(),
    st.sampled_from([{"type": "boolean"}, {"type": "null"}, {}]),
    st.lists(scalars, max_size=4).map(lambda values: {"enum": values}),
    scalars.map(lambda value: {"const": value}),
    st.sampled_from(JUNK),
)


def containers(children: st.SearchStrategy) -> st.SearchStrategy:
    names = st.text(alphabet="abcdefghij_\"\\ é", min_size=1, max_size=6)
    objects = st.builds(
        lambda props, required_count, extra: {"type": "object", "properties": props,
                                              "required": list(props)[:required_count], **extra},
        st.dictionaries(names, children, max_size=5), st.integers(0, 5),
        st.fixed_dictionaries({}, optional={"additionalProperties": st.booleans(),
                                            "minProperties": st.integers(0, 4), "maxProperties": st.integers(0, 4)}))
    arrays = st.builds(
        lambda items, extra: {"type": "array", "items": items, **extra}, children,
        st.fixed_dictionaries({}, optional={"minItems": st.integers(-1, 5), "maxItems": st.integers(-1, 5)}))
    unions = st.builds(lambda key, options: {key: options}, st.sampled_from(["anyOf", "oneOf", "allOf"]),
                       st.lists(children, min_size=1, max_size=3))
    return st.one_of(objects, arrays, unions)


trees = st.recursive(st.one_of(leaves, st.just({"$ref": "#/$defs/t"})), containers, max_leaves=12)
# $defs live at the root, where "#/$defs/..." points; a tree that refers to "t" inside "t" recurses.
schemas = st.one_of(trees, st.builds(lambda target, name: {"$defs": {"t": target}, "$ref": f"#/$defs/{name}"},
                                     trees, st.sampled_from(["t", "t", "missing"])))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(scope="module")
def tokenizer():
    return bpe_tokenizer()


@pytest.fixture(scope="module")
def baseline_rss(tokenizer) -> float:
    Grammar.from_regex("warm", tokenizer)  # the vocabulary's view, built once for every example
    return peak_rss_mb()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(schema=schemas, as_text=st.booleans())
def test_every_schema_compiles_or_is_refused_with_a_config_error(schema, as_text, tokenizer, baseline_rss):
    try:
        grammar = Grammar.from_json_schema(json.dumps(schema) if as_text else schema, tokenizer)
    except ConfigError as refused:
        assert str(refused)  # says what is wrong
        return
    state, eos = grammar.start(), reply_end_id(tokenizer)
    try:
        for step in range(STEPS):
            allowed = state.allowed(tokenizer.vocab_size)
            assert allowed.any(), "a live grammar always allows something (eos where it may end)"
            choices = [i for i in allowed.nonzero().flatten().tolist() if i != eos]
            if not choices:
                assert state.complete
                break
            state.advance(choices[(step * 31) % len(choices)])
    except ConfigError as limit:  # a limit met while following it: named, like a refusal
        assert "too large" in str(limit)
    assert peak_rss_mb() - baseline_rss < MEMORY_MB


def server_peak_rss_mb(pid: int) -> float:
    """The server process's peak resident memory (Linux: VmHWM in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for process {pid}")


@pytest.fixture(scope="module")
def server_baseline_rss() -> float:
    return server_peak_rss_mb(shared_server().process.pid)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=schemas)
def test_the_server_answers_every_schema_with_200_or_a_4xx(schema, server_baseline_rss):
    server = shared_server()
    body = chat_body(response_format={"type": "json_schema", "json_schema": {"name": "fuzz", "schema": schema}})
    response = httpx.post(server.url + "/v1/chat/completions", json=body, headers=server.headers, timeout=120)
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.text
    if response.status_code != 200:
        assert response.json()["error"]["message"]
    assert server_peak_rss_mb(server.process.pid) - server_baseline_rss < MEMORY_MB
