"""A backend for tests whose replies are written in the test: what the loops around a model do,
checked without one."""

from __future__ import annotations

import json
import time

from groklm.apps.backends import Backend, Reply, Usage
from groklm.infer.tool_calls import ToolCall


class Scripted(Backend):
    """A backend whose replies are given in advance; it records what it was sent."""

    kind, provider = "scripted", "test"

    def __init__(self, replies: list, capabilities=frozenset({"tools"}), delay: float = 0.0, model: str = "scripted"):
        super().__init__(model)
        self.replies, self.capabilities, self.delay = list(replies), capabilities, delay
        self.sent: list[dict] = []

    def _chat(self, messages, opts):
        self.sent.append({"messages": [dict(m) for m in messages], "tools": opts.tools, "stop": opts.stop})
        time.sleep(self.delay)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):  # the backend fails this call
            raise reply
        if isinstance(reply, list):  # tool calls
            calls = [ToolCall(name, json.dumps(args) if isinstance(args, dict) else args) for name, args in reply]
            return Reply("", "tool_calls", Usage(10, 5), self.model, tool_calls=calls)
        return Reply(reply, "stop", Usage(10, 5), self.model)

    def _stream(self, messages, opts):
        yield self._chat(messages, opts).text
