"""Tool calls: OpenAI messages -> ChatML, the tools prompt, forcing a call, parsing replies."""

from __future__ import annotations

import itertools
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groklm.errors import DataError
from groklm.infer.constrain import Grammar
from groklm.infer.requests import reply_grammar
from groklm.infer.schema_regex import schema_regex
from groklm.infer.tool_calls import (
    TOOLS_HEADER,
    ReplyParser,
    ToolSpec,
    call_regex,
    check_tools,
    format_call,
    parse_reply,
    pick_tools,
    to_chatml,
)
from groklm.tokenizer.char import CharTokenizer
from groklm.tokenizer.chat import render_prompt

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["city", "unit"]}}}
CALC = {"type": "function", "function": {"name": "calculator",
                                         "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}}}}
TOOLS = check_tools([WEATHER, CALC])


def test_openai_conversation_becomes_chatml_that_renders():
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}, {"type": "text", "text": "And 2*3?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris","unit":"c"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "calculator", "arguments": '{"expr": "2*3"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "6"}]},
        {"role": "assistant", "content": "Sunny, 18 C; and 6."},
    ]
    chatml = to_chatml(messages, TOOLS)
    assert [m["role"] for m in chatml] == ["system", "user", "assistant", "tool", "tool", "assistant"]
    assert chatml[0]["content"].startswith("Be brief.\n\n" + TOOLS_HEADER)
    assert 'get_weather({"type":"object","properties":{"city":{"type":"string"}' in chatml[0]["content"]
    assert chatml[0]["content"].endswith("calculator({\"type\":\"object\",\"properties\":{\"expr\":{\"type\":\"string\"}}})")
    assert chatml[1]["content"] == "Weather in Paris?\nAnd 2*3?"
    assert chatml[2]["content"] == 'CALL get_weather({"city": "Paris", "unit": "c"})\nCALL calculator({"expr": "2*3"})'
    assert chatml[3:5] == [{"role": "tool", "content": "18 C, sunny"}, {"role": "tool", "content": "6"}]
    # what render_prompt accepts, and the tool prompt appears once
    tokenizer = CharTokenizer(sorted({c for m in chatml for c in m["content"]} | set("assistant\n")))
    assert render_prompt(tokenizer, chatml)
    # no system message: the tools get one of their own; no tools: nothing is added
    assert to_chatml([{"role": "user", "content": "hi"}], TOOLS)[0] == {"role": "system", "content": to_chatml(
        [{"role": "user", "content": "x"}], TOOLS)[0]["content"]}
    assert to_chatml([{"role": "user", "content": "hi"}]) == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("messages, says", [
    ([], "non-empty list"),
    ("hi", "non-empty list"),
    ([{"role": "user"}], "content must be a string"),
    ([{"role": "wizard", "content": "x"}], "role 'wizard'"),
    ([{"role": "function", "content": "x"}], "role 'function'"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "text only"),
    ([{"role": "tool", "tool_call_id": "call_9", "content": "1"}], "earlier assistant tool call"),
    ([{"role": "assistant", "content": None}], "needs content or tool_calls"),
    ([{"role": "assistant", "content": None, "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "[1]"}}]}],
     "JSON object"),
    ([{"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f"}}]}], "'id'"),
    (["user: hi"], "must be an object"),
])
def test_bad_messages_say_what_is_wrong(messages, says):
    with pytest.raises(DataError, match=re.escape(says)):
        to_chatml(messages)


@pytest.mark.parametrize("tools, says", [
    ({"name": "f"}, "must be a list"),
    ([{"type": "retrieval"}], "tools[0] must be"),
    ([{"type": "function", "function": {"name": "bad name"}}], "letters, digits"),
    ([{"type": "function", "function": {"name": "f", "parameters": "x"}}], "JSON schema object"),
    ([{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}], "two tools"),
])
def test_bad_tools_say_what_is_wrong(tools, says):
    with pytest.raises(DataError, match=re.escape(says)):
        check_tools(tools)


def test_tool_choice():
    assert pick_tools(TOOLS, "auto") == TOOLS == pick_tools(TOOLS, "required") == pick_tools(TOOLS, None)
    assert pick_tools(TOOLS, "none") == []
    assert pick_tools(TOOLS, {"type": "function", "function": {"name": "calculator"}}) == [TOOLS[1]]
    for choice, says in [({"type": "function", "function": {"name": "nope"}}, "not in tools"), ("always", "must be"),
                         ({"type": "function"}, "must be")]:
        with pytest.raises(DataError, match=says):
            pick_tools(TOOLS, choice)
    with pytest.raises(DataError, match="non-empty tools"):
        pick_tools([], "required")


def test_replies_split_into_content_and_calls():
    content, calls = parse_reply('CALL get_weather({"city": "Oslo", "unit": "f"})', TOOLS)
    assert content is None and [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Oslo", "unit": "f"})]
    assert calls[0].id.startswith("call_") and calls[0].to_openai()["function"]["name"] == "get_weather"
    # text around calls stays content; two calls; blank lines around calls vanish
    content, calls = parse_reply('Let me look.\n\nCALL calculator({"expr":"1+1"})\n CALL get_weather({"city":"Rome"})\n',
                                 TOOLS)
    assert content == "Let me look." and [c.name for c in calls] == ["calculator", "get_weather"]
    # a bare argument works for a one-parameter tool
    _, calls = parse_reply("CALL calculator(17*3)", TOOLS)
    assert json.loads(calls[0].arguments) == {"expr": "17*3"}
    # not calls: unknown tool, arguments that are not an object, prose mentioning CALL, no tools
    for text in ['CALL nope({"a": 1})', "CALL get_weather([1, 2])", "CALL get_weather()", "CALLS are fun",
                 'I will CALL get_weather({"city": "Rome"})', "CALL get_weather({bad json"]:
        assert parse_reply(text, TOOLS) == (text, [])
    assert parse_reply('CALL calculator({"expr": "1"})', []) == ('CALL calculator({"expr": "1"})', [])


def test_streaming_holds_back_only_lines_that_may_be_calls():
    parser = ReplyParser(TOOLS)
    assert parser.push("Hel") == "Hel"  # cannot be a call: shown at once
    assert parser.push("lo\nCA") == "lo"  # the newline waits for something visible
    assert parser.push("LL calc") == ""
    assert parser.push('ulator({"expr": "2"})\nok') == "ok"
    assert parser.finish() == ("", parser.calls) and len(parser.calls) == 1
    assert ReplyParser([]).push("CALL x") == "CALL x"


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.sampled_from(["hello", "", " ", "CALL", "CALL calculator(3)", "CAL", 'CALL nope({})',
                                       'CALL get_weather({"city": "A\\nB"})', "x CALL calculator(1)", "CALLx"]),
                      max_size=6),
       cuts=st.lists(st.integers(0, 200), max_size=8))
def test_streamed_parse_equals_whole_parse(lines, cuts):
    text = "\n".join(lines)
    content, calls = parse_reply(text, TOOLS)
    parser = ReplyParser(TOOLS)
    bounds = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    shown = "".join(parser.push(text[a:b]) for a, b in itertools.pairwise(bounds))
    tail, streamed_calls = parser.finish()
    assert [(c.name, c.arguments) for c in streamed_calls] == [(c.name, c.arguments) for c in calls]
    assert (shown + tail) == (content or "")
    # nothing is lost: every line is either content or a call
    if not calls:
        assert content == text or (not text.strip() and not content.strip())


def test_call_regex_accepts_exactly_valid_calls():
    pattern = call_regex(TOOLS)
    assert re.fullmatch(pattern, format_call("get_weather", {"city": "Paris", "unit": "c"}))
    assert re.fullmatch(pattern, 'CALL calculator({"expr":"1+2"})')
    assert re.fullmatch(pattern, "CALL calculator({})")  # expr is optional
    for bad in ['CALL get_weather({"city": "Paris"})',  # unit is required
                'CALL get_weather({"city": "Paris", "unit": "k"})', 'CALL nope({})', 'calculator({})']:
        assert not re.fullmatch(pattern, bad)
    only = call_regex(pick_tools(TOOLS, {"type": "function", "function": {"name": "calculator"}}))
    assert not re.fullmatch(only, format_call("get_weather", {"city": "Paris", "unit": "c"}))
    # every forced call parses back into the same call
    line = format_call("get_weather", {"city": "Lima", "unit": "f"})
    assert json.loads(parse_reply(line, TOOLS)[1][0].arguments) == {"city": "Lima", "unit": "f"}


CALL_TOKENIZER = CharTokenizer(sorted(set(" (){}[]:,\"'_-.+*0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\\")))


def test_call_regex_compiles_for_a_tokenizer():
    tokenizer = CALL_TOKENIZER
    state = Grammar.from_regex(call_regex([ToolSpec("calculator", "", CALC["function"]["parameters"])]), tokenizer).start()
    for token in tokenizer.encode('CALL calculator({"expr": "2*3"})'):
        assert state.allowed(tokenizer.vocab_size)[token]
        state.advance(token)
    assert state.complete


def test_one_translation_of_a_request_into_a_grammar():
    """reply_grammar (groklm.infer.requests), behind the server and the apps' backends: a forced
    call wins, then a JSON schema, then a regex; a free reply has no grammar."""
    tokenizer = CALL_TOKENIZER
    tools = check_tools([CALC])
    assert reply_grammar(tokenizer) is None
    assert reply_grammar(tokenizer, tools, "auto") is None  # the model may call, or not
    forced = reply_grammar(tokenizer, tools, "required", json_schema={"type": "integer"})
    assert forced.pattern == call_regex(tools)
    named = reply_grammar(tokenizer, tools, {"type": "function", "function": {"name": "calculator"}})
    assert named.pattern == call_regex(tools)
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 3}}, "required": ["n"]}
    assert reply_grammar(tokenizer, tools, "auto", json_schema=schema).pattern == schema_regex(schema)
    assert reply_grammar(tokenizer, regex="[0-9]+").pattern == "[0-9]+"

