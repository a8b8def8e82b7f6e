"""The backend protocol: one way for applications to talk to a model, wherever the model runs.

Every backend (local.py: a groklm run on our Engine; hf.py: a transformers checkpoint;
openai.py: any OpenAI-compatible HTTP API) offers the same calls:

    chat(messages, **options) -> Reply      one reply; options below
    chat_many([messages, ...], **options) -> [Reply]   one reply per conversation, in order:
                                            a loop over chat(), or one batch on the local engine
    stream(messages, **options) -> text pieces as they are generated
    count_tokens(messages) -> int | None    prompt length (None: only the server knows)
    score(messages, replies) -> [log p(reply | messages)]   where the model's logits are at hand

and says what else it can do in `capabilities`:

    grammar    json_schema / regex constraints enforced while decoding (local; hf when its
               tokenizer.json can be read as a byte-level BPE); numeric bounds included
               (groklm.infer.schema_regex)
    json_schema  json_schema passed to the server as response_format (openai)
    tools      OpenAI-style tools and tool_calls
    logprobs   per-token log-probabilities (openai: if the server returns them)
    score      `score()`: exact log-probabilities of given replies (local, hf)

Options: max_tokens, temperature (default 0: greedy, so apps are repeatable), top_p, seed,
stop (strings), logprobs (None, or k: each token's logprob and the k most likely others),
json_schema, regex, tools (OpenAI tool dicts), tool_choice.

Tools on local and hf backends use groklm's plain-text protocol (groklm.infer.tool_calls): the
tools are described in the system message and the model writes `CALL name({...})` lines, which
come back as `tool_calls`. Every call is a tracing span (groklm.apps.tracing).
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields

from groklm.apps.tracing import clip, messages_attribute, span
from groklm.errors import ConfigError, GroklmError
from groklm.infer.engine import SamplingParams
from groklm.infer.tool_calls import ToolCall, ToolSpec, check_tools, parse_reply, pick_tools


class BackendError(GroklmError):
    """A backend that could not answer: an HTTP error, a refused connection, a bad reply."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class Logprob:
    token: str
    logprob: float
    top: list[tuple[str, float]] | None = None  # the most likely tokens at this step, with their logprobs


@dataclass
class Reply:
    text: str
    finish_reason: str  # "stop", "length" or "tool_calls"
    usage: Usage
    model: str
    logprobs: list[Logprob] | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    latency_s: float = 0.0

    def message(self) -> dict:
        """The reply as an OpenAI assistant message, to append to the conversation."""
        if self.tool_calls:
            calls = [call.to_openai() for call in self.tool_calls]
            return {"role": "assistant", "content": self.text or None, "tool_calls": calls}
        return {"role": "assistant", "content": self.text}


@dataclass
class ChatOptions:
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None
    json_schema: dict | None = None
    regex: str | None = None
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None

    def __post_init__(self):
        if self.json_schema is not None and self.regex is not None:
            raise ConfigError("give json_schema or regex, not both")
        if (self.json_schema is not None or self.regex is not None) and self.tools:
            raise ConfigError("a reply constrained to a schema or regex cannot also call tools")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])

    def sampling(self) -> SamplingParams:
        """The engine's SamplingParams (validated: ranges, stop strings, logprobs)."""
        return SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                              seed=self.seed, stop=self.stop, logprobs=self.logprobs).validate()


class Backend(ABC):
    """The protocol every backend implements; `chat` and `stream` add the tracing span."""

    kind: str = ""
    provider: str = ""  # gen_ai.provider.name
    capabilities: frozenset[str] = frozenset()

    def __init__(self, model: str):
        self.model = model

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r})"

    @property
    def name(self) -> str:
        """"kind:model" (local:runs/chat, openai:gpt-4o-mini): which model answered, whatever URL
        it was reached at; what distillation's label cache and its traces call a teacher."""
        return f"{self.kind}:{self.model}"

    def chat(self, messages: Sequence[dict], **options) -> Reply:
        opts = self._options(options)
        with span(f"chat {self.model}", self._request_attributes(messages, opts)) as s:
            start = time.perf_counter()
            reply = self._chat(list(messages), opts)
            reply.latency_s = time.perf_counter() - start
            output = {"role": "assistant", "content": clip(reply.text)}
            if reply.tool_calls:
                output["tool_calls"] = [call.to_openai() for call in reply.tool_calls]
            s.update({
                "gen_ai.response.model": reply.model,
                "gen_ai.response.finish_reasons": [reply.finish_reason],
                "gen_ai.usage.input_tokens": reply.usage.input_tokens,
                "gen_ai.usage.output_tokens": reply.usage.output_tokens,
                "gen_ai.output.messages": json.dumps([output], ensure_ascii=False),
            })
        return reply

    def chat_many(self, conversations: Sequence[Sequence[dict]], **options) -> list[Reply]:
        """A reply to each conversation, in order, with the same options. Here one chat() after
        another; a backend that can decode several at once (local) overrides it."""
        return [self.chat(messages, **options) for messages in conversations]

    def stream(self, messages: Sequence[dict], **options) -> Iterator[str]:
        opts = self._options(options)
        if opts.tools:
            raise ConfigError("stream() returns text; use chat() for replies that may call tools")
        # Not the parent of anything, and a generator may be finished from another context.
        with span(f"chat {self.model}", {**self._request_attributes(messages, opts), "groklm.stream": True},
                  activate=False) as s:
            pieces = []
            for piece in self._stream(list(messages), opts):
                pieces.append(piece)
                yield piece
            s.update({"gen_ai.output.messages": json.dumps([{"role": "assistant", "content": clip("".join(pieces))}])})

    def _options(self, options: dict) -> ChatOptions:
        unknown = set(options) - {f.name for f in fields(ChatOptions)}
        if unknown:
            raise ConfigError(f"unknown chat option(s) {', '.join(sorted(unknown))}; "
                              f"options are {', '.join(f.name for f in fields(ChatOptions))}")
        opts = ChatOptions(**options)
        self._check(opts)
        return opts

    def _check(self, opts: ChatOptions) -> None:
        constrained = opts.json_schema is not None or opts.regex is not None
        if opts.regex is not None and "grammar" not in self.capabilities:
            raise ConfigError(f"the {self.kind} backend cannot enforce a regex; use a local or hf backend")
        if constrained and not {"grammar", "json_schema"} & self.capabilities:
            raise ConfigError(f"the {self.kind} backend {self.model} cannot constrain its output to a JSON schema")
        if opts.tools and "tools" not in self.capabilities:
            raise ConfigError(f"the {self.kind} backend {self.model} cannot call tools")

    def _request_attributes(self, messages: Sequence[dict], opts: ChatOptions) -> dict:
        return {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self.provider,
            "gen_ai.request.model": self.model,
            "gen_ai.request.max_tokens": opts.max_tokens,
            "gen_ai.request.temperature": opts.temperature,
            "gen_ai.request.top_p": opts.top_p,
            "gen_ai.request.seed": opts.seed,
            "gen_ai.output.type": "json" if opts.json_schema is not None else "text",
            "gen_ai.input.messages": messages_attribute(list(messages)),
            "groklm.tools": [t.get("function", {}).get("name") for t in opts.tools] if opts.tools else None,
        }

    @abstractmethod
    def _chat(self, messages: list[dict], opts: ChatOptions) -> Reply: ...

    @abstractmethod
    def _stream(self, messages: list[dict], opts: ChatOptions) -> Iterator[str]: ...

    def count_tokens(self, messages: Sequence[dict]) -> int | None:
        """Tokens in the prompt these messages make (None when only the server can tell)."""
        return None

    def score(self, messages: Sequence[dict], replies: Sequence[str]) -> list[float]:
        """log p(reply | messages) for each reply, as the assistant's whole turn."""
        raise ConfigError(f"the {self.kind} backend cannot score replies (it has no logits at hand)")


def callable_tools(opts: ChatOptions) -> list[ToolSpec]:
    """The tools a reply may call under opts.tool_choice (local and hf backends)."""
    return pick_tools(check_tools(opts.tools), opts.tool_choice) if opts.tools else []


def finish_reply(text: str, finish_reason: str, usage: Usage, model: str, logprobs, tools: list[ToolSpec]) -> Reply:
    """A reply from generated text: with tools, CALL lines become tool calls."""
    if not tools:
        return Reply(text, finish_reason, usage, model, logprobs)
    content, calls = parse_reply(text, tools)
    return Reply(content or "", "tool_calls" if calls else finish_reason, usage, model, logprobs, calls)
