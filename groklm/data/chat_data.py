"""Your own chat data, read into the shapes the synthetic tasks produce.

Two JSON Lines formats, one record per line (blank lines are ignored):

    SFT          {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    preferences  {"prompt": "Hi", "chosen": "Hello", "rejected": "Go away"}

In a preference line, `prompt` is a string (one user message) or a message list, and `chosen`
/ `rejected` are strings (the assistant's reply) or message lists. Lists are normalised to the
synthetic shape, where chosen and rejected are single reply strings: turns that both lists
share (an assistant tool call and its tool result, say) move to the end of the prompt, and what
differs must then be one assistant message on each side.

Other keys (such as "task") are kept, so files written by `groklm data synth` round-trip.
Both are read by groklm.jsonl.read_jsonl: a bad line is a `DataError` that names the file, the
line and the problem; with skip_bad_lines=True bad lines are skipped instead, with one warning
that counts them. (Files of any other JSON objects: `read_jsonl(path)`; writing: `write_jsonl`.)
"""

from __future__ import annotations

import os

from groklm.errors import DataError
from groklm.jsonl import read_jsonl
from groklm.tokenizer.chat import check_messages


def _sft_record(obj: object) -> dict:
    if not isinstance(obj, dict) or "messages" not in obj:
        raise DataError('expected an object with a "messages" list')
    messages = check_messages(obj["messages"], "messages")
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError("messages has no assistant turn, so there is nothing to learn")
    return {**obj, "messages": messages}


def as_messages(value: object, role: str, where: str) -> list[dict]:
    """A string becomes one message of `role`; a list is checked as messages."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return check_messages(value, where)


def preference_record(obj: object) -> dict:
    if not isinstance(obj, dict):
        raise DataError('expected an object with "prompt", "chosen" and "rejected"')
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in obj]
    if missing:
        raise DataError(f"missing {', '.join(repr(k) for k in missing)}")
    prompt = as_messages(obj["prompt"], "user", "prompt")
    chosen = as_messages(obj["chosen"], "assistant", "chosen")
    rejected = as_messages(obj["rejected"], "assistant", "rejected")
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    chosen, rejected, prompt = chosen[shared:], rejected[shared:], prompt + chosen[:shared]
    for name, reply in (("chosen", chosen), ("rejected", rejected)):
        if len(reply) != 1 or reply[0]["role"] != "assistant":
            raise DataError(f"{name} must end in exactly one assistant message after the turns it shares with the other side")
    if prompt[-1]["role"] == "assistant":
        raise DataError("prompt ends with an assistant message; the reply being compared must come next")
    return {**obj, "prompt": prompt, "chosen": chosen[0]["content"], "rejected": rejected[0]["content"]}


def load_sft_jsonl(path: str | os.PathLike, skip_bad_lines: bool = False) -> list[dict]:
    """SFT conversations: [{"messages": [...]}, ...], each checked and with an assistant turn."""
    return read_jsonl(path, _sft_record, skip_bad_lines)


def load_preferences_jsonl(path: str | os.PathLike, skip_bad_lines: bool = False) -> list[dict]:
    """Preference pairs: [{"prompt": [messages], "chosen": str, "rejected": str}, ...]."""
    return read_jsonl(path, preference_record, skip_bad_lines)
