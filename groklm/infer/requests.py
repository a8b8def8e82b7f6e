"""What a chat request asks of decoding: the grammar its reply must follow.

An OpenAI-style request can constrain the reply three ways, and the server (groklm.serve) and
the apps' backends (groklm.apps.backends) translate them here, the same way:

    tool_choice "required" or a named function  ->  exactly one call line (tool_calls.call_regex)
    a JSON schema (response_format, json_schema) ->  JSON documents valid for it (schema_regex)
    a regular expression (apps only)             ->  itself

A forced tool call wins over the rest; with none of them the reply is free (no grammar).
"""

from __future__ import annotations

from collections.abc import Sequence

from groklm.infer.constrain import Grammar
from groklm.infer.tool_calls import ToolSpec, call_regex


def forces_a_call(tools: Sequence[ToolSpec], tool_choice: object) -> bool:
    """Whether the reply must be a call: tool_choice "required" or a named function."""
    return bool(tools) and tool_choice not in (None, "auto", "none")


def reply_grammar(
    tokenizer,
    tools: Sequence[ToolSpec] = (),
    tool_choice: object = None,
    json_schema: dict | str | None = None,
    regex: str | None = None,
) -> Grammar | None:
    """The grammar a reply must follow, or None. `tools` are the ones the reply may call (after
    tool_choice picked them: tool_calls.pick_tools). Properties keep the schema's order, the order
    the model writes them in; numeric bounds are enforced. Compiling takes milliseconds (up to
    about half a second for the largest grammars the limits allow): a server runs it off its
    event loop. A schema or regex over a limit (constrain.GrammarLimits) is a ConfigError."""
    if forces_a_call(tools, tool_choice):
        return Grammar.from_regex(call_regex(tools), tokenizer)
    if json_schema is not None:
        return Grammar.from_json_schema(json_schema, tokenizer)
    if regex is not None:
        return Grammar.from_regex(regex, tokenizer)
    return None
