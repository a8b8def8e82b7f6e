"""Tool calls: OpenAI-style messages and tools <-> the plain-text protocol a small model writes.

The synthetic tool task (groklm.tasks.tool) trains models to speak it. A call is one
line: `CALL`, the function's name, and its arguments as one JSON object in brackets:

    CALL get_weather({"city": "Paris", "unit": "c"})

A reply may mix text lines and call lines; every call line naming a known tool with a JSON
object for arguments becomes a tool call, every other line stays text. Results come back as
`tool` turns, one per call, in the order of the calls. One line per call keeps the format
learnable by a tiny model and parseable without guessing (no nested markup to balance), and
the server can stream the text lines while it holds back only lines that start with `CALL`.

The tools are described at the end of the system message (one is added if there is none):

    # Tools
    To call a tool, write a line CALL name({"argument": value, ...}), one line per call.
    Each result comes back in a tool message.
    get_weather({"type":"object","properties":{"city":{"type":"string"}},...}): Current weather.

OpenAI's message shapes map onto ChatML (groklm.tokenizer.chat) like this:

    system / developer            -> system, content as is
    user                          -> user
    assistant with tool_calls     -> assistant, its text (if any) then one CALL line per call
    tool (with tool_call_id)      -> tool, the result as is
    content as [{"type": "text", "text": ...}, ...] -> the texts joined by newlines

`tool_choice` "required" or a named function is enforced by `call_regex`, a regular language
of exactly one valid call line, for `groklm.infer.constrain.Grammar.from_regex`.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from groklm.errors import ConfigError, DataError
from groklm.infer.schema_regex import schema_regex

NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for function names
CALL_LINE_RE = re.compile(r"CALL\s+([A-Za-z0-9_-]{1,64})\s*\((.*)\)")
TOOLS_HEADER = (
    "# Tools\n"
    'To call a tool, write a line CALL name({"argument": value, ...}), one line per call.\n'
    "Each result comes back in a tool message."
)
NO_ARGUMENTS = {"type": "object", "properties": {}}
JSON_TYPES = ("null", "boolean", "object", "array", "number", "string", "integer")  # JSON Schema's, all of them
# Where a JSON schema holds further schemas: maps of them, single ones (or a list, for "items"
# in older drafts), and lists of them. Every other keyword's value is data (enum, const, default).
SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
SCHEMA_ONE = ("items", "additionalProperties", "additionalItems", "contains", "not", "if", "then", "else",
              "propertyNames", "unevaluatedItems", "unevaluatedProperties")
SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")


@dataclass(frozen=True)
class ToolSpec:
    """What the model is told about a tool (from an OpenAI `tools` entry). The Python function
    behind a tool, which apps can call, is groklm.apps.tools.Tool."""

    name: str
    description: str = ""
    parameters: dict = field(default_factory=lambda: dict(NO_ARGUMENTS))  # a JSON schema


@dataclass
class ToolCall:
    name: str
    arguments: str  # a JSON object, as text (what OpenAI's API carries)
    id: str = field(default_factory=lambda: "call_" + secrets.token_hex(12))

    def to_openai(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


# ---- requests: tools and messages -> ChatML ---------------------------------------------------


def check_tools(tools: object) -> list[ToolSpec]:
    """Validate an OpenAI `tools` list: [{"type": "function", "function": {"name", ...}}, ...]."""
    if not isinstance(tools, list):
        raise DataError("tools must be a list of {'type': 'function', 'function': {...}} objects")
    checked: list[ToolSpec] = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            raise DataError(f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ..., 'parameters': ...}}}}")
        name, description = function.get("name"), function.get("description") or ""
        parameters = function.get("parameters") or NO_ARGUMENTS
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise DataError(f"tools[{i}].function.name must be 1-64 letters, digits, '_' or '-', got {name!r}")
        if not isinstance(description, str) or not isinstance(parameters, dict):
            raise DataError(f"tools[{i}].function: 'description' must be a string and 'parameters' a JSON schema object")
        check_schema(parameters, f"tools[{i}].function.parameters")
        if any(t.name == name for t in checked):
            raise DataError(f"tools[{i}]: two tools are named {name!r}")
        checked.append(ToolSpec(name, description, parameters))
    return checked


def check_schema(schema: object, where: str) -> None:
    """Refuse what no JSON schema can be, anywhere in `schema`: a `type` that is not one of JSON
    Schema's seven (e.g. "banana"), a subschema that is not an object (or true/false), an empty
    `enum` (nothing could match), `required` that is not a list of names. Other keywords are
    the compiler's to judge when a reply must follow the schema. Walks with a stack, not
    recursion: a request may nest schemas as deep as its body allows."""
    stack = [(schema, where)]
    while stack:
        node, at = stack.pop()
        if isinstance(node, bool):  # true: anything, false: nothing
            continue
        if not isinstance(node, dict):
            raise DataError(f"{at} must be a JSON schema (an object), got {type(node).__name__}")
        kinds = node.get("type", [])
        kinds = kinds if isinstance(kinds, list) else [kinds]
        unknown = [kind for kind in kinds if not isinstance(kind, str) or kind not in JSON_TYPES]
        if unknown or node.get("type") == []:
            raise DataError(f"{at}.type: {node['type']!r} is not a JSON Schema type; the types are {', '.join(JSON_TYPES)}")
        if "enum" in node and (not isinstance(node["enum"], list) or not node["enum"]):
            raise DataError(f"{at}.enum must be a non-empty list of the allowed values")
        required = node.get("required", [])
        if not isinstance(required, list) or not all(isinstance(name, str) for name in required):
            raise DataError(f"{at}.required must be a list of property names")
        for key in SCHEMA_MAPS:
            children = node.get(key, {})
            if not isinstance(children, dict):
                raise DataError(f"{at}.{key} must be an object mapping names to schemas")
            stack += [(child, f"{at}.{key}.{name}") for name, child in children.items()]
        for key in SCHEMA_ONE:
            if key in node:
                child = node[key]
                items = child if key == "items" and isinstance(child, list) else [child]
                stack += [(item, f"{at}.{key}") for item in items]
        for key in SCHEMA_LISTS:
            children = node.get(key, [])
            if not isinstance(children, list):
                raise DataError(f"{at}.{key} must be a list of schemas")
            stack += [(child, f"{at}.{key}[{k}]") for k, child in enumerate(children)]


def tools_prompt(tools: Sequence[ToolSpec]) -> str:
    """The text that tells the model which tools exist and how to call them."""
    lines = [TOOLS_HEADER]
    for tool in tools:
        schema = json.dumps(tool.parameters, separators=(",", ":"), ensure_ascii=False)
        lines.append(f"{tool.name}({schema})" + (f": {tool.description}" if tool.description else ""))
    return "\n".join(lines)


def format_call(name: str, arguments: dict) -> str:
    """One call line: CALL name({...})."""
    return f"CALL {name}({json.dumps(arguments, ensure_ascii=False)})"


def text_content(content: object, where: str) -> str:
    """A message's content as one string: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise DataError(f"{where}: content parts must be {{'type': 'text', 'text': str}} (got {kind!r}); "
                                "this model reads text only")
            texts.append(part["text"])
        return "\n".join(texts)
    raise DataError(f"{where}: content must be a string or a list of text parts")


def _assistant_text(message: dict, where: str, call_ids: set[str]) -> str:
    """An assistant turn's text: its content, then one CALL line per tool call."""
    content = message.get("content")
    lines = [] if content is None else [text_content(content, where)]
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise DataError(f"{where}: tool_calls must be a list")
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not isinstance(call.get("id"), str):
            raise DataError(f"{where}.tool_calls[{j}] must be {{'id', 'type': 'function', 'function': {{'name', 'arguments'}}}}")
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (TypeError, json.JSONDecodeError):
            arguments = None
        if not isinstance(arguments, dict):
            raise DataError(f"{where}.tool_calls[{j}].function.arguments must be a JSON object as a string")
        call_ids.add(call["id"])
        lines.append(format_call(function["name"], arguments))
    if not lines:
        raise DataError(f"{where}: an assistant message needs content or tool_calls")
    return "\n".join(line for line in lines if line)


def to_chatml(messages: object, tools: Sequence[ToolSpec] = ()) -> list[dict]:
    """OpenAI chat messages (and tools to describe) -> [{"role", "content": str}] for render_prompt."""
    if not isinstance(messages, list) or not messages:
        raise DataError("messages must be a non-empty list of {'role', 'content'} objects")
    chatml: list[dict] = []
    call_ids: set[str] = set()  # every tool result must answer a call made earlier
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise DataError(f"{where} must be an object with 'role' and 'content'")
        role = message.get("role")
        if role in ("system", "developer", "user"):
            content = text_content(message.get("content"), where)
            chatml.append({"role": "user" if role == "user" else "system", "content": content})
        elif role == "assistant":
            chatml.append({"role": "assistant", "content": _assistant_text(message, where, call_ids)})
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in call_ids:
                raise DataError(f"{where}: a tool message needs the tool_call_id of an earlier assistant tool call")
            chatml.append({"role": "tool", "content": text_content(message.get("content"), where)})
        else:
            raise DataError(f"{where} has role {role!r}; roles are system, developer, user, assistant, tool")
    if tools:
        if chatml[0]["role"] == "system":
            chatml[0] = {"role": "system", "content": chatml[0]["content"] + "\n\n" + tools_prompt(tools)}
        else:
            chatml.insert(0, {"role": "system", "content": tools_prompt(tools)})
    return chatml


# ---- forcing a call ---------------------------------------------------------------------------


def pick_tools(tools: Sequence[ToolSpec], tool_choice: object) -> list[ToolSpec]:
    """The tools a reply may call under `tool_choice` ("none", "auto", "required", or
    {"type": "function", "function": {"name": ...}}); [] for "none"."""
    if tool_choice in (None, "auto", "required"):
        if tool_choice == "required" and not tools:
            raise DataError("tool_choice 'required' needs a non-empty tools list")
        return list(tools)
    if tool_choice == "none":
        return []
    function = tool_choice.get("function") if isinstance(tool_choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or tool_choice.get("type") != "function":
        raise DataError("tool_choice must be 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}, "
                        f"got {tool_choice!r:.200}")
    chosen = [tool for tool in tools if tool.name == name]
    if not chosen:
        raise DataError(f"tool_choice names {name!r}, which is not in tools")
    return chosen


def call_regex(tools: Sequence[ToolSpec]) -> str:
    """The regular language of one call line to one of `tools`, with arguments valid for its
    schema: the constraint behind tool_choice "required" or a named function."""
    alternatives = []
    for tool in tools:
        try:
            arguments = schema_regex(tool.parameters)  # property order kept, numeric bounds enforced
        except ConfigError as exc:
            raise ConfigError(f"tool {tool.name!r}: parameters: {exc}") from exc
        alternatives.append(f"{re.escape(tool.name)}\\({arguments}\\)")
    return "CALL (" + "|".join(alternatives) + ")"


# ---- replies: text -> content and tool calls ----------------------------------------------------


def parse_call(line: str, tools: Sequence[ToolSpec]) -> ToolCall | None:
    """The call a line makes, or None if it is text (not a call, an unknown tool, bad arguments).

    A single-parameter tool also accepts a bare argument, so `CALL calculator(17*3)` calls
    calculator with {"expr": "17*3"} (a small model's shortcut costs it nothing)."""
    match = CALL_LINE_RE.fullmatch(line.strip())
    tool = next((t for t in tools if match and t.name == match.group(1)), None)
    if tool is None:
        return None
    raw = match.group(2)
    try:
        arguments = json.loads(raw)
    except json.JSONDecodeError:
        names = list(tool.parameters.get("properties") or {})
        arguments = {names[0]: raw} if len(names) == 1 and raw.strip() else None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(tool.name, json.dumps(arguments, ensure_ascii=False))


class ReplyParser:
    """Splits a reply into text and tool calls as it streams in.

    `push(text)` returns the text that is safe to show now: a line is held back only while it
    could still be a call (it starts with "CALL"), and blank text is held until something
    visible follows it (so a reply that is only calls has no content). `finish()` returns the
    text still held (empty if the reply made calls) and the calls. With no tools, everything
    is text."""

    def __init__(self, tools: Sequence[ToolSpec]):
        self.tools = list(tools)
        self.calls: list[ToolCall] = []
        self._line = ""  # the current, unfinished line while it may be a call
        self._line_is_text = False  # the current line has been shown: it is not a call
        self._blank = ""  # whitespace held until visible text follows

    def push(self, text: str) -> str:
        if not self.tools:
            return text
        out = []
        for piece in re.split(r"(\n)", text):
            if piece == "\n":
                out.append(self._end_line("\n"))
            elif piece:
                out.append(self._extend_line(piece))
        return "".join(out)

    def finish(self) -> tuple[str, list[ToolCall]]:
        tail = self._end_line("") if self._line else ""
        return ("" if self.calls else tail + self._blank), self.calls

    def _extend_line(self, piece: str) -> str:
        if self._line_is_text:
            return self._show(piece)
        self._line += piece
        head = self._line.lstrip()
        if head.startswith("CALL") or "CALL".startswith(head):
            return ""  # may still become a call
        self._line_is_text, line = True, self._line
        self._line = ""
        return self._show(line)

    def _end_line(self, newline: str) -> str:
        line, was_text = self._line, self._line_is_text
        self._line, self._line_is_text = "", False
        if not was_text and line.strip():
            call = parse_call(line, self.tools)
            if call is not None:
                self.calls.append(call)
                self._blank = ""  # the blank lines around calls are not content
                return ""
        return self._show(line + newline)

    def _show(self, text: str) -> str:
        if not text.strip():
            self._blank += text
            return ""
        text, self._blank = self._blank + text, ""
        return text


def parse_reply(text: str, tools: Sequence[ToolSpec]) -> tuple[str | None, list[ToolCall]]:
    """A whole reply -> (content or None, tool calls), exactly as the streamed parse splits it."""
    parser = ReplyParser(tools)
    shown = parser.push(text)
    tail, calls = parser.finish()
    content = shown + tail
    return (None if calls and not content.strip() else content), calls
