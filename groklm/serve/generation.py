"""From OpenAI requests to engine jobs, and from engine deltas back to OpenAI responses.

A request becomes one `Job` per choice (n choices, or one per prompt of a batched
/v1/completions request). Every job is a separate engine request, so they share the
continuously batched decode loop with everybody else's. `run_jobs` merges their deltas into
one stream tagged by choice index; the route either streams them out as Server-Sent Events or
collects them into one response.

Chat replies pass through `ReplyParser` when tools are offered: call lines become
`tool_calls` (finish_reason "tool_calls"), everything else is content. A forced tool choice
and `response_format` become a grammar the engine enforces token by token
(groklm.infer.requests, as for the apps' backends).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from groklm.errors import DataError, GroklmError
from groklm.infer.constrain import Grammar
from groklm.infer.engine import (
    AsyncEngine,
    Delta,
    EngineBusy,
    SamplingParams,
    TokenLogprob,
)
from groklm.infer.requests import forces_a_call, reply_grammar
from groklm.infer.tool_calls import (
    ReplyParser,
    ToolSpec,
    check_tools,
    pick_tools,
    to_chatml,
)
from groklm.serve.schemas import ApiError, ChatCompletionRequest, CompletionRequest, Sampling
from groklm.tokenizer.chat import render_prompt

# response_format json_object: an object whose values are strings, numbers, booleans, null, or
# arrays and objects of those. outlines-core's schema-less {"type": "object"} nests three levels
# deep, and its automaton takes seconds to index even for a 100-token vocabulary; two levels
# index in well under a second for a 4096-token one.
_SCALAR = {"type": ["string", "number", "boolean", "null"]}
ANY_JSON_OBJECT = {"type": "object", "additionalProperties": {"anyOf": [
    _SCALAR, {"type": "array", "items": _SCALAR}, {"type": "object", "additionalProperties": _SCALAR}]}}
NO_LOGPROB = -9999.0  # what a token the grammar forbids reports: JSON has no -Infinity


@dataclass
class Job:
    """One choice to generate: the prompt, how to sample it, what it must match."""

    prompt: list[int]
    params: SamplingParams
    constraint: Grammar | None = None


@dataclass
class ChoiceState:
    """What one choice has produced so far."""

    parser: ReplyParser
    parallel_calls: bool = True
    completion_tokens: int = 0
    text: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    calls: list = field(default_factory=list)
    finish_reason: str | None = None

    def add(self, delta: Delta) -> str:
        """Take one delta; return the content it makes visible."""
        self.completion_tokens += len(delta.token_ids)
        self.logprobs += delta.logprobs or []
        shown = self.parser.push(delta.text)
        if delta.finish_reason is not None:
            tail, calls = self.parser.finish()
            shown += tail
            self.calls = calls if self.parallel_calls else calls[:1]
            self.finish_reason = "tool_calls" if self.calls else delta.finish_reason
        self.text.append(shown)
        return shown

    @property
    def content(self) -> str | None:
        text = "".join(self.text)
        return None if self.calls and not text.strip() else text


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


# ---- requests -> jobs ---------------------------------------------------------------------------


@contextmanager
def about(param: str) -> Iterator[None]:
    """A GroklmError raised inside is the client's mistake in field `param`: a 400 naming it."""
    try:
        yield
    except GroklmError as exc:
        raise ApiError(400, str(exc), param, type(exc).__name__) from exc


def check_room(block_size: int, prompt_tokens: int, max_tokens: int | None, param: str, prompt_name: str) -> None:
    """Refuse a max_tokens the context cannot hold after the prompt, as OpenAI's API does
    (rather than stop early with finish_reason "length" and let the client think it was heard)."""
    # A prompt that leaves no room at all gets the engine's own message (it names the prompt).
    if max_tokens is not None and prompt_tokens < block_size < prompt_tokens + max_tokens:
        raise ApiError(400, f"This model's maximum context length is {block_size} tokens. However, you requested "
                            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {prompt_name}, {max_tokens} in "
                            f"the completion). Please reduce the length of the {prompt_name} or {param}.",
                       param, "context_length_exceeded")


def sampling_params(body: Sampling, max_tokens: int | None, logprobs: int | None, choice: int) -> SamplingParams:
    """The engine's sampling settings for choice number `choice` of a request."""
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    seed = None if body.seed is None else body.seed + choice  # n choices differ, each repeatable
    return SamplingParams(
        max_tokens=max_tokens or 1 << 30,  # the engine ends the reply where the context ends
        temperature=body.temperature, top_k=body.top_k, top_p=body.top_p,
        frequency_penalty=body.frequency_penalty, presence_penalty=body.presence_penalty,
        seed=seed, stop=stop, logprobs=logprobs,
    ).validate()


async def chat_jobs(body: ChatCompletionRequest, engine: AsyncEngine) -> tuple[list[Job], list[ToolSpec]]:
    """The jobs for a chat request, and the tools whose calls to parse out of the replies."""
    tokenizer = engine.engine.tokenizer
    with about("tools"):
        tools = check_tools(body.tools or [])
    with about("tool_choice"):
        callable_tools = pick_tools(tools, body.tool_choice)
    with about("messages"):
        messages = to_chatml(body.messages, tools if callable_tools else [])  # "none": no tools at all
        prompt = render_prompt(tokenizer, messages)  # the engine refuses one that does not fit the context
    if body.top_logprobs is not None and not body.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs: true", "top_logprobs")
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    max_tokens = body.max_completion_tokens or body.max_tokens
    check_room(engine.engine.block_size, len(prompt), max_tokens,
               "max_completion_tokens" if body.max_completion_tokens else "max_tokens", "messages")
    with about("response_format"):
        json_schema = response_format_schema(body)
    # Compiling walks the whole vocabulary through an automaton: keep it off the event loop.
    with about("tool_choice" if forces_a_call(callable_tools, body.tool_choice) else "response_format"):
        constraint = await asyncio.to_thread(reply_grammar, tokenizer, callable_tools, body.tool_choice,
                                             json_schema=json_schema)
    return [Job(prompt, sampling_params(body, max_tokens, logprobs, i), constraint) for i in range(body.n)], callable_tools


def response_format_schema(body: ChatCompletionRequest) -> dict | None:
    """The JSON schema response_format asks for (json_object: any object), or None for text."""
    form = body.response_format
    if form is None or form.type == "text":
        return None
    if form.type == "json_schema" and form.json_schema is None:
        raise DataError("response_format json_schema needs a 'json_schema': {'name', 'schema'} object")
    return form.json_schema.schema_ if form.type == "json_schema" else ANY_JSON_OBJECT


def completion_jobs(body: CompletionRequest, engine: AsyncEngine) -> tuple[list[Job], int]:
    """One job per (prompt, choice), and the prompts' token count. A prompt is a string or
    token ids, or a list of them."""
    tokenizer = engine.engine.tokenizer
    prompt = body.prompt
    prompts = [prompt] if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)) else prompt
    with about("prompt"):
        ids = [tokenizer.encode(p) if isinstance(p, str) else list(p) for p in prompts]
    if not ids or not all(ids):
        raise ApiError(400, "prompt is empty: give at least one token (a non-empty string or list of ids)", "prompt")
    for p in ids:
        check_room(engine.engine.block_size, len(p), body.max_tokens, "max_tokens", "prompt")
    jobs = [Job(p, sampling_params(body, body.max_tokens or 16, body.logprobs, i)) for p in ids for i in range(body.n)]
    return jobs, sum(len(p) for p in ids)


# ---- running jobs -------------------------------------------------------------------------------


async def run_jobs(engine: AsyncEngine, jobs: list[Job]) -> AsyncIterator[tuple[int, Delta]]:
    """Every job's deltas, tagged with the job's index, as the engine makes them. Closing this
    generator (e.g. the client went away) cancels every job that is still running."""
    if len(jobs) > engine.capacity:
        raise DataError(f"{len(jobs)} completions in one request; this server takes at most {engine.capacity}")
    if engine.in_flight + len(jobs) > engine.capacity:  # all or nothing: never start half a request
        raise EngineBusy(f"the server is busy ({engine.in_flight} requests in flight); retry shortly")
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, job: Job) -> None:
        try:
            async for delta in engine.stream(job.prompt, job.params, job.constraint):
                queue.put_nowait((index, delta))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            queue.put_nowait((index, exc))

    tasks = [asyncio.create_task(pump(i, job)) for i, job in enumerate(jobs)]
    try:
        running = len(jobs)
        while running:
            index, item = await queue.get()
            if isinstance(item, Exception):
                raise item
            yield index, item
            running -= item.finish_reason is not None
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# ---- engine output -> OpenAI objects -------------------------------------------------------------


def chat_logprobs(items: list[TokenLogprob]) -> dict:
    def entry(token: str, logprob: float, raw: list[int] | None = None) -> dict:
        return {"token": token, "logprob": max(logprob, NO_LOGPROB),
                "bytes": raw if raw is not None else list(token.encode())}

    return {"content": [{**entry(lp.token, lp.logprob, lp.bytes),
                         "top_logprobs": [entry(t, v) for t, v in lp.top or []]} for lp in items]}


def completion_logprobs(items: list[TokenLogprob], offset: int = 0) -> dict:
    """The legacy format: parallel lists of tokens, their logprobs, alternatives and text offsets."""
    offsets = []
    for lp in items:
        offsets.append(offset)
        offset += len(lp.token)
    return {"tokens": [lp.token for lp in items], "token_logprobs": [max(lp.logprob, NO_LOGPROB) for lp in items],
            "top_logprobs": [{t: max(v, NO_LOGPROB) for t, v in lp.top or []} for lp in items],
            "text_offset": offsets}


class ChatStream:
    """Builds the objects of one chat completion, streamed (chunks) or whole."""

    def __init__(self, model: str, states: list[ChoiceState], prompt_tokens: int, want_logprobs: bool):
        self.id, self.created, self.model = new_id("chatcmpl"), int(time.time()), model
        self.states, self.prompt_tokens, self.want_logprobs = states, prompt_tokens, want_logprobs

    def _object(self, kind: str, choices: list[dict], **extra) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices, **extra}

    def chunk(self, choices: list[dict], include_usage: bool) -> dict:
        return self._object("chat.completion.chunk", choices, **({"usage": None} if include_usage else {}))

    def opening(self, include_usage: bool) -> dict:
        return self.chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                            "finish_reason": None} for i in range(len(self.states))], include_usage)

    def delta_chunks(self, index: int, delta: Delta, include_usage: bool) -> list[dict]:
        """The chunks one engine delta turns into (none if it shows nothing yet)."""
        state = self.states[index]
        shown = state.add(delta)
        logprobs = chat_logprobs(delta.logprobs) if self.want_logprobs and delta.logprobs else None
        chunks = []
        if shown or logprobs:
            chunks.append({"index": index, "delta": {"content": shown}, "logprobs": logprobs, "finish_reason": None})
        if state.calls:
            calls = [{"index": k, **call.to_openai()} for k, call in enumerate(state.calls)]
            chunks.append({"index": index, "delta": {"tool_calls": calls}, "logprobs": None, "finish_reason": None})
        if state.finish_reason is not None:
            chunks.append({"index": index, "delta": {}, "logprobs": None, "finish_reason": state.finish_reason})
        return [self.chunk([c], include_usage) for c in chunks]

    def usage(self) -> dict:
        return usage(self.prompt_tokens, sum(s.completion_tokens for s in self.states))

    def usage_chunk(self) -> dict:
        return self._object("chat.completion.chunk", [], usage=self.usage())

    def whole(self) -> dict:
        choices = []
        for i, state in enumerate(self.states):
            message = {"role": "assistant", "content": state.content}
            if state.calls:
                message["tool_calls"] = [call.to_openai() for call in state.calls]
            choices.append({"index": i, "message": message, "finish_reason": state.finish_reason,
                            "logprobs": chat_logprobs(state.logprobs) if self.want_logprobs else None})
        return self._object("chat.completion", choices, usage=self.usage())


class CompletionStream:
    """Builds the objects of one (legacy) text completion, streamed or whole."""

    def __init__(self, model: str, choices: int, prompt_tokens: int, want_logprobs: bool):
        self.id, self.created, self.model = new_id("cmpl"), int(time.time()), model
        self.states = [ChoiceState(ReplyParser([])) for _ in range(choices)]
        self.prompt_tokens, self.want_logprobs = prompt_tokens, want_logprobs
        self._offsets = [0] * choices  # where each choice's next token starts in its text

    def _object(self, choices: list[dict], **extra) -> dict:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": choices, **extra}

    def delta_chunks(self, index: int, delta: Delta, include_usage: bool) -> list[dict]:
        state = self.states[index]
        state.add(delta)
        logprobs = None
        if self.want_logprobs:
            logprobs = completion_logprobs(delta.logprobs or [], self._offsets[index])
            self._offsets[index] += len(delta.text)
        if not delta.text and delta.finish_reason is None and not logprobs:
            return []
        choice = {"index": index, "text": delta.text, "logprobs": logprobs, "finish_reason": state.finish_reason}
        return [self._object([choice], **({"usage": None} if include_usage else {}))]

    def usage(self) -> dict:
        return usage(self.prompt_tokens, sum(s.completion_tokens for s in self.states))

    def usage_chunk(self) -> dict:
        return self._object([], usage=self.usage())

    def whole(self) -> dict:
        choices = [{"index": i, "text": "".join(s.text), "finish_reason": s.finish_reason,
                    "logprobs": completion_logprobs(s.logprobs) if self.want_logprobs else None}
                   for i, s in enumerate(self.states)]
        return self._object(choices, usage=self.usage())


def sse(data: dict | str) -> str:
    """One Server-Sent Event."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"
