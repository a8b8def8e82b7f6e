"""Hostile and impossible grammars: every schema or regex is served within bounded cost, or
refused with a ConfigError that says what is wrong (a server answers it with a 400).

Issue 17: `pattern: "[^\\n]{1,400}"` and an object of 2000 `maxLength` strings made the old
compiler build a multi-gigabyte index; `minimum: 1e400` and `multipleOf: 0` crashed the
schema translation; `minimum > maximum` and `enum: []` were silently ignored.
"""

from __future__ import annotations

import json
import random
import resource
import signal
import threading
import time

import httpx
import pytest
import torch
from outlines_core import Guide, Index, Vocabulary

from groklm.cli.main import build_parser
from groklm.errors import ConfigError
from groklm.infer import constrain
from groklm.infer.constrain import Grammar, GrammarLimits
from groklm.infer.engine import Engine, SamplingParams
from groklm.infer.schema_regex import schema_regex
from groklm.model.gpt import GPT, GPTConfig
from groklm.tokenizer.chat import reply_end_id

from helpers.apps import tokenizer as bpe_tokenizer
from helpers.servers import KEY, MODEL, assert_error, chat_body, make_server_run, shared_server, start_server, stop_server

PATTERN_400 = {"type": "object", "properties": {"p": {"type": "string", "pattern": "[^\\n]{1,400}"}}, "required": ["p"]}


def many_strings(n: int, required: bool) -> dict:
    properties = {f"f{i}": {"type": "string", "maxLength": 40} for i in range(n)}
    return {"type": "object", "properties": properties, **({"required": list(properties)} if required else {})}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(scope="module")
def tokenizer():
    return bpe_tokenizer()  # byte-level BPE: multi-byte tokens, as real vocabularies have


def follow(grammar: Grammar, text: str, tokenizer) -> constrain.GrammarState:
    """Walk `text`'s tokens through the grammar, each one checked against the mask first."""
    state = grammar.start()
    for token in tokenizer.encode(text):
        assert state.allowed(tokenizer.vocab_size)[token], (text, tokenizer.decode([token]))
        state.advance(token)
    return state


# ---- impossible and crashing schemas: refused with the reason --------------------------------------

REFUSED = [
    ('{"type": "integer", "minimum": 1e400}', "minimum must be a finite number"),  # JSON text: 1e400 reads as inf
    ({"type": "integer", "multipleOf": 0}, "multipleOf must be greater than 0"),
    ({"type": "number", "multipleOf": -2}, "multipleOf must be greater than 0"),
    ({"type": "integer", "minimum": 5, "maximum": 3}, "no integer is >= 5 and <= 3"),
    ({"type": "number", "minimum": 2.5, "maximum": 1}, "no number is >= 2.5 and <= 1"),
    ({"type": "number", "exclusiveMinimum": 3, "maximum": 3}, "no number is > 3 and <= 3"),
    ({"type": "integer", "minimum": 1.2, "maximum": 1.8}, "no integer lies between 1.2 and 1.8"),
    ({"type": "integer", "minimum": 1, "maximum": 9, "multipleOf": 10}, "no multiple of 10 lies in [1, 9]"),
    ({"enum": []}, "enum is empty"),
    ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength 5 is greater than maxLength 2"),
    ({"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 1}, "minItems 3 is greater than maxItems 1"),
    ({"type": "object", "properties": {"age": {"type": "integer", "minimum": 200, "maximum": 100}}}, "no integer"),
    ({"type": "string", "maxLength": -1}, "maxLength must be a whole number >= 0, got -1"),
    ({"type": "object", "properties": {"x": {"$ref": "#/nowhere"}}}, "unsupported JSON schema"),
    ("{not json", "unsupported JSON schema"),
]


@pytest.mark.parametrize(("schema", "says"), REFUSED, ids=[says for _, says in REFUSED])
def test_impossible_and_malformed_schemas_are_refused_with_the_reason(schema, says, tokenizer):
    with pytest.raises(ConfigError, match="unsupported JSON schema") as refused:
        Grammar.from_json_schema(schema, tokenizer)
    assert says in str(refused.value)


def test_edge_cases_that_are_satisfiable_still_compile(tokenizer):
    one_value = Grammar.from_json_schema({"type": "integer", "minimum": 7, "maximum": 7}, tokenizer)
    assert follow(one_value, "7", tokenizer).complete
    huge = Grammar.from_json_schema({"type": "integer", "minimum": -1e200, "maximum": 1e200}, tokenizer)
    assert follow(huge, "-123456789", tokenizer).complete  # bounds past 10**100 are left to validation
    # Property names and JSON data are not keywords: a property called "enum", an empty enum in a default.
    keywords_as_names = {"type": "object", "properties": {
        "enum": {"type": "integer", "minimum": 2, "maximum": 4},
        "minimum": {"type": "string", "default": {"enum": []}}}, "required": ["enum", "minimum"]}
    assert follow(Grammar.from_json_schema(keywords_as_names, tokenizer), '{"enum": 3, "minimum": "x"}', tokenizer).complete


def test_a_property_of_any_value_takes_any_json_and_nothing_else(tokenizer):
    grammar = Grammar.from_json_schema({"type": "object", "properties": {"a": {}, "b": {"title": "B"}},
                                        "required": ["a", "b"]}, tokenizer)
    assert follow(grammar, '{"a": {"x": [1, "y"]}, "b": null}', tokenizer).complete
    assert not grammar.start().allowed(tokenizer.vocab_size)[tokenizer.encode("n")[0]]  # not a bare null


def test_a_pattern_never_lets_a_raw_quote_or_control_character_into_the_string(tokenizer):
    for pattern in ["[^\\n]{1,5}", ".{1,5}", "\\S{1,5}", "[ -~]{1,5}", '[a-z"]{1,5}']:
        grammar = Grammar.from_json_schema({"type": "string", "pattern": pattern}, tokenizer)
        state = follow(grammar, '"a', tokenizer)
        allowed = state.allowed(tokenizer.vocab_size)
        for char in ['"', "\\", "\t"]:
            [token] = tokenizer.encode(char)
            assert allowed[token] == (char == '"'), (pattern, char)  # a quote only as the closing one


# ---- hostile schemas: served within bounds, or refused naming the limit ----------------------------


def test_a_400_character_pattern_property_is_served_exactly(tokenizer):
    before = peak_rss_mb()
    grammar = Grammar.from_json_schema(PATTERN_400, tokenizer)
    text = '{"p": "' + "x" * 399
    state = follow(grammar, text + 'y"}', tokenizer)
    assert state.complete
    at_limit = follow(grammar, text + "y", tokenizer)
    assert not at_limit.allowed(tokenizer.vocab_size)[tokenizer.encode("z")[0]]  # a 401st character is not
    assert peak_rss_mb() - before < 500  # the old index for it took gigabytes


def test_an_object_of_2000_required_strings_is_served(tokenizer):
    before = peak_rss_mb()
    grammar = Grammar.from_json_schema(many_strings(2000, required=True), tokenizer)
    document = json.dumps({f"f{i}": "ab" for i in range(2000)}, separators=(", ", ": "))
    assert follow(grammar, document, tokenizer).complete
    assert peak_rss_mb() - before < 500


def test_many_optional_properties_are_refused_before_the_regex_is_built(tokenizer):
    with pytest.raises(ConfigError) as refused:
        Grammar.from_json_schema(many_strings(2000, required=False), tokenizer)  # a 160 MB regex
    message = str(refused.value)
    assert "too large" in message and "--grammar-max-chars" in message and "required" in message
    # A few optional properties are ordinary, and a limit raised lets more through.
    assert follow(Grammar.from_json_schema(many_strings(20, required=False), tokenizer), '{"f3": "a"}', tokenizer).complete
    with pytest.raises(ConfigError, match="too large"):
        Grammar.from_json_schema(many_strings(60, required=False), tokenizer, GrammarLimits(max_regex_chars=100_000))
    Grammar.from_json_schema(many_strings(60, required=False), tokenizer, GrammarLimits(max_regex_chars=2_000_000))


def test_each_limit_is_named_with_the_flag_that_raises_it(tokenizer):
    with pytest.raises(ConfigError, match="--grammar-max-chars"):
        Grammar.from_regex("a" * 101, tokenizer, GrammarLimits(max_regex_chars=100))
    with pytest.raises(ConfigError, match="--grammar-compile-fuel"):
        Grammar.from_json_schema(many_strings(200, required=True), tokenizer, GrammarLimits(compile_fuel=100))
    states = Grammar.from_json_schema(PATTERN_400, tokenizer, GrammarLimits(max_states=20))
    with pytest.raises(ConfigError, match="--grammar-max-states"):
        follow(states, '{"p": "' + "q" * 100, tokenizer)
    fuel = Grammar.from_json_schema(PATTERN_400, tokenizer, GrammarLimits(step_fuel=10))
    with pytest.raises(ConfigError, match="--grammar-step-fuel"):
        follow(fuel, '{"p": "' + "q" * 100, tokenizer)


def test_limits_must_be_positive():
    with pytest.raises(ConfigError, match="max_states must be >= 1"):
        GrammarLimits(max_states=0)
    with pytest.raises(ConfigError, match="cache_mb must be >= 0"):
        GrammarLimits(cache_mb=-1)


def test_serve_flags_default_to_the_library_limits():
    args = build_parser().parse_args(["serve", "RUN"])
    assert GrammarLimits(max_regex_chars=args.grammar_max_chars, compile_fuel=args.grammar_compile_fuel,
                         step_fuel=args.grammar_step_fuel, max_states=args.grammar_max_states,
                         cache_mb=args.grammar_cache_mb) == GrammarLimits()


def test_a_language_with_no_text_is_refused_at_compile_time(tokenizer):
    with pytest.raises(ConfigError, match="matches no text"):
        Grammar.from_regex("a[^\\x00-\\U0010ffff]", tokenizer)
    with pytest.raises(ConfigError, match="cannot compile the constraint"):
        Grammar.from_regex("(ab", tokenizer)


# ---- the engine: masks within the language, specials never, eos only where it may end --------------


LANGUAGES = [
    r"[0-9]{3}-[a-z]{2,5}",
    schema_regex({"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                                   "age": {"type": "integer", "minimum": 0, "maximum": 120},
                                                   "tags": {"type": "array", "items": {"enum": ["a", "bc"]}}},
                  "required": ["name", "age"]}),
    schema_regex({"type": "string", "format": "date"}),
]


@pytest.mark.parametrize("pattern", LANGUAGES, ids=["code", "person", "date"])
def test_masks_stay_within_the_language_the_exact_index_allows(pattern, tokenizer):
    """outlines-core's index (the engine before issue 17) is exact, so it is the reference: every
    token llguidance allows, it allows too; where it allows more, the text ahead is forced and
    llguidance offers our tokenizer's own spelling of it; both agree on where the reply may end."""
    eos = reply_end_id(tokenizer)
    specials = set(tokenizer.special_tokens.values())
    by_bytes: dict[bytes, list[int]] = {}
    for token_id in range(tokenizer.vocab_size):
        if token_id not in specials:
            by_bytes.setdefault(tokenizer.token_bytes(token_id), []).append(token_id)
    index = Index(pattern, Vocabulary(eos, by_bytes))
    rng = random.Random(0)
    for _ in range(10):
        guide, state = Guide(index), Grammar.from_regex(pattern, tokenizer).start()
        for _ in range(60):
            exact, ours = reference_mask(guide, tokenizer.vocab_size), state.allowed(tokenizer.vocab_size)
            assert not (ours & ~exact).any(), "a token outside the language"
            assert ours.any() == exact.any() and bool(ours[eos]) == bool(exact[eos]) == state.complete
            assert not any(ours[i] for i in specials - {eos})
            if ours.sum() < exact.sum():
                assert state.matcher.compute_ff_bytes(), "fewer tokens only where the text ahead is forced"
            choices = [i for i in ours.nonzero().flatten().tolist() if i != eos]
            if not choices:
                break
            token = rng.choice(choices)
            state.advance(token)
            guide.advance(token, return_tokens=False)


def reference_mask(guide: Guide, vocab_size: int) -> torch.Tensor:
    words = torch.zeros((vocab_size + 31) // 32, dtype=torch.int32).numpy()
    guide.write_mask_into(words.ctypes.data, words.size, words.itemsize)
    return torch.tensor([bool(words[i // 32] >> (i % 32) & 1) for i in range(vocab_size)])


def test_a_random_model_writes_valid_documents_under_the_hostile_pattern(tokenizer):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=512, n_layer=1, n_head=2, n_embd=16)).eval()
    grammar = Grammar.from_json_schema(PATTERN_400, tokenizer)
    params = [SamplingParams(max_tokens=450, temperature=1.0, seed=s) for s in range(3)]
    for done in Engine(model, tokenizer, max_batch=3).generate([tokenizer.encode("go")] * 3, params, grammar):
        if done.finish_reason == "stop":
            value = json.loads(done.text)["p"]
            assert 1 <= len(value) <= 400 and "\n" not in value
        else:  # the length limit came first: still a prefix of a document
            assert done.text.startswith('{')


# ---- the cache: least recently used out, within a byte budget ---------------------------------------


@pytest.fixture
def small_cache():
    previous = constrain._limits
    constrain.configure(GrammarLimits(cache_mb=3 * constrain.cost_bytes("x" * 1000) / 2**20))
    constrain.CACHE.clear()
    yield constrain.CACHE
    constrain.configure(previous)
    constrain.CACHE.clear()


def test_the_cache_keeps_the_recently_used_within_its_budget(small_cache, tokenizer):
    patterns = [f"{c}{{1,3}}" + "x" * (1000 - 6) for c in "abcd"]  # four grammars of the same size
    for pattern in patterns[:3]:
        Grammar.from_regex(pattern, tokenizer)
    assert len(small_cache) == 3
    first = Grammar.from_regex(patterns[0], tokenizer)  # a hit: now the most recent
    Grammar.from_regex(patterns[3], tokenizer)  # evicts the least recent, patterns[1]
    assert len(small_cache) == 3 and small_cache.bytes <= small_cache.budget_bytes
    assert small_cache.get(first.vocabulary, patterns[0], first.limits) is first._matcher
    assert small_cache.get(first.vocabulary, patterns[1], first.limits) is None
    Grammar.from_regex("y" * 20000, tokenizer)  # bigger than the whole budget: compiled, not kept
    assert small_cache.get(first.vocabulary, "y" * 20000, first.limits) is None
    assert small_cache.bytes <= small_cache.budget_bytes


def test_concurrent_compiles_of_one_grammar_agree(tokenizer):
    results, schema = [], many_strings(50, required=True)

    def compile_one():
        results.append(Grammar.from_json_schema(schema, tokenizer).pattern)

    threads = [threading.Thread(target=compile_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and len(set(results)) == 1


# ---- over HTTP: a 400 naming the problem, and the server goes on serving -----------------------------


def schema_body(schema: dict, **fields) -> dict:
    return chat_body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}, **fields)


HTTP_REFUSED = [
    ({"type": "integer", "multipleOf": 0}, "multipleOf must be greater than 0"),
    ({"type": "integer", "minimum": 9, "maximum": 1}, "no integer is >= 9 and <= 1"),
    ({"enum": []}, "enum is empty"),
    (many_strings(300, required=False), "too large"),
]


@pytest.mark.parametrize(("schema", "says"), HTTP_REFUSED, ids=[says for _, says in HTTP_REFUSED])
def test_the_server_answers_400_with_the_reason_and_keeps_serving(schema, says):
    server = shared_server()
    response = httpx.post(server.url + "/v1/chat/completions", json=schema_body(schema), headers=server.headers, timeout=60)
    assert_error(response, 400, says)
    normal = httpx.post(server.url + "/v1/chat/completions", json=chat_body(), headers=server.headers, timeout=60)
    assert normal.status_code == 200, normal.text


def test_the_server_serves_the_hostile_pattern():
    server = shared_server()
    body = schema_body(PATTERN_400, max_tokens=20)
    response = httpx.post(server.url + "/v1/chat/completions", json=body, headers=server.headers, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"].startswith('{')


def test_serve_grammar_flags_set_the_limits(tmp_path):
    server = start_server(make_server_run(tmp_path / "run"), tmp_path / "server.log", "--api-key", KEY,
                          "--grammar-max-chars", "5000")
    try:
        url, headers = server.url + "/v1/chat/completions", server.headers
        too_big = httpx.post(url, json=schema_body(many_strings(100, required=True)), headers=headers, timeout=60)
        assert_error(too_big, 400, "--grammar-max-chars")
        fits = httpx.post(url, json=schema_body(many_strings(3, required=True)), headers=headers, timeout=60)
        assert fits.status_code == 200, fits.text
    finally:
        stop_server(server)


def test_the_server_exits_cleanly_on_sigterm_while_a_constrained_request_runs(tmp_path):
    run = make_server_run(tmp_path / "run")
    server = start_server(run, tmp_path / "server.log", "--api-key", KEY)
    try:
        body = schema_body(many_strings(2000, required=True), max_tokens=400, model=MODEL)
        answer: list = []
        client = threading.Thread(target=lambda: answer.append(_post_or_error(server, body)))
        client.start()
        while not answer and httpx.get(server.url + "/health").json()["in_flight"] == 0:
            time.sleep(0.01)  # until the request is inside the server (or already answered)
        server.process.terminate()
        # uvicorn finishes the requests in flight, shuts the app down, then ends by the signal it got
        assert server.process.wait(timeout=60) in (0, -signal.SIGTERM)
        client.join()
    finally:
        stop_server(server)
    log = (tmp_path / "server.log").read_text()
    assert "Application shutdown complete" in log and "Traceback" not in log, log
    assert answer in ([200], [400]) or isinstance(answer[0], httpx.TransportError), answer


def _post_or_error(server, body):
    try:
        return httpx.post(server.url + "/v1/chat/completions", json=body, headers=server.headers, timeout=120).status_code
    except httpx.TransportError as error:  # the server went away first: fine, it was told to stop
        return error
