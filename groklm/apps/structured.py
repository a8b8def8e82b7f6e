"""Structured outputs: a validated Pydantic object from any backend, and classification.

    class Person(BaseModel):
        name: str
        age: int = Field(ge=0, le=130)

    result = extract(backend, Person, "Maria is 34 and lives in Lyon.")
    result.value        # Person(name='Maria', age=34)
    result.attempts     # every try: its text, its error (None for the valid one), its usage
    result.usage        # tokens over all attempts

How the JSON is obtained depends on what the backend can do (`mode="auto"`):

    grammar      local and hf backends: decoding is constrained by a grammar compiled from the
                 schema (groklm.infer.constrain, llguidance), so the text always parses and
                 has the schema's shape; whitespace is bounded (one optional blank between
                 tokens), so a small model cannot loop on blanks
    json_schema  HTTP backends: response_format {"type": "json_schema", ...}
    tools        one forced tool whose parameters are the schema (mode="tools")
    prompt       the schema in a system message, the first JSON value in the reply parsed;
                 also the fallback when a server rejects response_format

A grammar holds the shape, and numeric bounds where a regular language can say them
(integer ranges, whole-number float ranges: groklm.infer.schema_regex); it cannot hold fractional
bounds (ge=0.5), cross-field checks or custom validators. Whatever fails Pydantic's validation
is sent back, with the errors, as a new user turn ("re-ask"); `max_retries` is the number of
re-asks after the first attempt, and only the latest failed reply is kept in the conversation
(a small model's context fills fast). When they run out, ExtractionError holds every attempt.

`classify(backend, text, labels)` picks one label (a list of strings, a Literal or an Enum).
Where the backend can score replies (local, hf), every label's probability as the whole
reply is computed exactly and normalised: the confidence is that probability. Elsewhere the
model answers and the confidence is the probability of its answer from the returned
logprobs (None when the server sends none).

Both refuse an input longer than `max_input_chars` (MAX_INPUT_CHARS unless raised) before it
is tokenized or sent: a 50 MB document is millions of tokens, far past any context, and would
otherwise cost minutes of tokenizing (or an upload) only to be refused by the model.
"""

from __future__ import annotations

import enum
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter, ValidationError, create_model

from groklm.apps.backends import Backend, BackendError, Usage
from groklm.apps.tools import validation_message
from groklm.apps.tracing import span
from groklm.errors import ConfigError, DataError, GroklmError

T = TypeVar("T")
MODES = ("auto", "grammar", "json_schema", "tools", "prompt")
MAX_INPUT_CHARS = 1_000_000  # ~250,000 tokens: more than the context of any model groklm runs


@dataclass
class Attempt:
    mode: str
    text: str
    finish_reason: str
    usage: Usage
    error: str | None = None  # why this attempt was rejected; None for the accepted one


@dataclass
class Extraction(Generic[T]):
    value: T
    attempts: list[Attempt]
    usage: Usage = field(default_factory=Usage)


class ExtractionError(GroklmError):
    """No valid object after every attempt; `attempts` says what each one returned and why it failed."""

    def __init__(self, message: str, attempts: list[Attempt]):
        super().__init__(message)
        self.attempts = attempts
        self.usage = sum((a.usage for a in attempts), Usage())


def as_messages(messages: str | list[dict]) -> list[dict]:
    return [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)


def check_input_size(messages: list[dict], max_input_chars: int) -> None:
    size = sum(len(str(message.get("content") or "")) for message in messages)
    if size > max_input_chars:
        raise DataError(f"the input is {size:,} characters, more than max_input_chars={max_input_chars:,}: no model's "
                        "context holds it. Split the document (e.g. with groklm.apps.rag.Chunker) and work on each part, "
                        "or raise max_input_chars for a model with a context that long")


def choose_mode(backend: Backend, mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; modes are {', '.join(MODES)}")
    if mode != "auto":
        return mode
    if "grammar" in backend.capabilities:
        return "grammar"
    return "json_schema" if "json_schema" in backend.capabilities else "prompt"


def extract(backend: Backend, response_model: type[T] | Any, messages: str | list[dict], max_retries: int = 2,
            mode: str = "auto", max_tokens: int = 512, max_input_chars: int = MAX_INPUT_CHARS, **options) -> Extraction[T]:
    """A `response_model` instance read from the model's reply to `messages`; see the module doc.
    `options` go to backend.chat (temperature, seed, ...)."""
    if max_retries < 0:
        raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
    check_input_size(as_messages(messages), max_input_chars)
    adapter = TypeAdapter(response_model)
    schema = adapter.json_schema()
    name = getattr(response_model, "__name__", None) or str(response_model)
    mode = choose_mode(backend, mode)
    original = conversation = as_messages(messages)
    attempts: list[Attempt] = []
    with span(f"extract {name}", {"groklm.operation": "extract", "gen_ai.output.type": "json",
                                  "gen_ai.request.model": backend.model, "groklm.max_retries": max_retries}) as s:
        while len([a for a in attempts if a.mode != "rejected"]) <= max_retries:
            number = len(attempts) + 1
            with span(f"attempt {number}", {"groklm.attempt": number, "groklm.mode": mode}) as attempt_span:
                try:
                    text, finish, usage = ask(backend, mode, schema, name, conversation, max_tokens, options)
                except BackendError as error:
                    if mode != "json_schema" or error.status not in (400, 404, 415, 422, 501):
                        raise
                    # The server does not take response_format: prompt with the schema instead.
                    attempts.append(Attempt("rejected", "", "error", Usage(), f"response_format refused: {error}"))
                    mode = "prompt"
                    continue
                except ConfigError as error:
                    if len(attempts) == 0:
                        raise  # the request itself is wrong (a schema, an option): not the model's doing
                    attempts.append(Attempt(mode, "", "error", Usage(), f"could not re-ask: {error}"))
                    raise ExtractionError(f"no valid {name}: the re-ask failed ({error})", attempts) from error
                value, error = parse(adapter, text, finish)
                attempts.append(Attempt(mode, text, finish, usage, error))
                attempt_span.update({"groklm.validation_errors": error})
            if error is None:
                total = sum((a.usage for a in attempts), Usage())
                s.update({"groklm.attempts": len(attempts), "gen_ai.usage.input_tokens": total.input_tokens,
                          "gen_ai.usage.output_tokens": total.output_tokens})
                return Extraction(value, attempts, total)
            # Only the latest failed reply and its errors: enough to correct, and it keeps the
            # prompt short (a small model's context fills up fast).
            conversation = [*original, {"role": "assistant", "content": text}, {"role": "user", "content": reask(error)}]
        s.update({"groklm.attempts": len(attempts)})
        raise ExtractionError(f"no valid {name} after {len(attempts)} attempt(s); last error: {attempts[-1].error}", attempts)


def ask(backend: Backend, mode: str, schema: dict, name: str, conversation: list[dict], max_tokens: int,
        options: dict) -> tuple[str, str, Usage]:
    """One attempt: (the JSON text, finish reason, usage)."""
    if mode in ("grammar", "json_schema"):  # enforced while decoding, here or by the server
        reply = backend.chat(conversation, json_schema=schema, max_tokens=max_tokens, **options)
        return reply.text, reply.finish_reason, reply.usage
    if mode == "tools":
        tool_name = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:64] or "answer"
        tool = {"type": "function", "function": {"name": tool_name, "description": f"Record the {name}.", "parameters": schema}}
        choice = {"type": "function", "function": {"name": tool_name}}
        reply = backend.chat(conversation, tools=[tool], tool_choice=choice, max_tokens=max_tokens, **options)
        text = reply.tool_calls[0].arguments if reply.tool_calls else reply.text
        return text, reply.finish_reason, reply.usage
    instruction = {"role": "system", "content": "Reply with one JSON value that matches this JSON schema, and nothing "
                   f"else:\n{json.dumps(schema, separators=(',', ':'))}"}
    reply = backend.chat([instruction, *conversation], max_tokens=max_tokens, **options)
    return first_json(reply.text), reply.finish_reason, reply.usage


def first_json(text: str) -> str:
    """The first JSON object or array in `text` (models like to add words and ``` fences)."""
    decoder = json.JSONDecoder()
    for i, char in enumerate(text):
        if char in "{[":
            try:
                _, end = decoder.raw_decode(text, i)
            except json.JSONDecodeError:
                continue
            return text[i:end]
    return text


def parse(adapter: TypeAdapter, text: str, finish_reason: str) -> tuple[Any, str | None]:
    """(value, None) if `text` validates, else (None, the errors as text)."""
    try:
        return adapter.validate_json(text), None
    except ValidationError as error:
        if finish_reason == "length" and any(e["type"] == "json_invalid" for e in error.errors()):
            return None, "the reply was cut off at max_tokens before the JSON was complete"
        return None, validation_message(error)


def reask(error: str) -> str:
    return f"That reply is not valid: {error}\nReply again with the corrected JSON only."


# ---- classification -------------------------------------------------------------------------------


@dataclass
class Classification(Generic[T]):
    label: T
    confidence: float | None  # the label's probability; None if the backend gives no logprobs
    scores: dict[str, float] | None  # every label's probability, where the backend can score
    usage: Usage = field(default_factory=Usage)


def label_values(labels) -> tuple[list[str], list[Any]]:
    """(label texts the model writes, the values to return) for a list, a Literal or an Enum."""
    if isinstance(labels, type) and issubclass(labels, enum.Enum):
        members = list(labels)
        return [str(m.value) for m in members], members
    if typing.get_origin(labels) is typing.Literal:
        values = list(typing.get_args(labels))
        return [str(v) for v in values], values
    values = list(labels)
    if not values or not all(isinstance(v, str) for v in values):
        raise ConfigError("labels must be a non-empty list of strings, a Literal[...] or an Enum")
    return values, values


def classify(backend: Backend, text: str, labels, instructions: str | None = None,
             system: str | None = None, max_input_chars: int = MAX_INPUT_CHARS) -> Classification:
    """The label that fits `text` best; see the module doc. The prompt is the user turn
    "{instructions}\\n{text}" (default instructions: "Classify this text as a, b or c.")."""
    check_input_size([{"content": text}], max_input_chars)
    texts, values = label_values(labels)
    if len(set(texts)) != len(texts):
        raise ConfigError(f"labels must be distinct, got {texts}")
    listed = ", ".join(texts[:-1]) + " or " + texts[-1] if len(texts) > 1 else texts[0]
    asked_instructions = instructions  # the caller's own, recorded for `groklm traces export --format classify`
    instructions = instructions or f"Classify this text as {listed}."
    messages = ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": f"{instructions}\n{text}"}]
    with span("classify", {"groklm.operation": "classify", "gen_ai.request.model": backend.model, "groklm.backend": backend.name,
                           "groklm.labels": texts, "groklm.classify.text": text,
                           "groklm.classify.instructions": asked_instructions}) as s:
        if "score" in backend.capabilities:
            result = classify_by_score(backend, messages, texts, values)
        else:
            result = classify_by_answer(backend, messages, texts, values, listed)
        # Usage on the classify span itself: scoring labels makes no chat call to carry it.
        s.update({"groklm.label": str(result.label), "groklm.confidence": result.confidence,
                  "gen_ai.usage.input_tokens": result.usage.input_tokens,
                  "gen_ai.usage.output_tokens": result.usage.output_tokens})
    return result


def classify_by_score(backend: Backend, messages: list[dict], texts: list[str], values: list) -> Classification:
    logps = backend.score(messages, texts)
    top = max(logps)
    weights = [math.exp(lp - top) for lp in logps]  # a softmax over the labels, computed stably
    probs = [w / sum(weights) for w in weights]
    best = max(range(len(texts)), key=probs.__getitem__)
    prompt = backend.count_tokens(messages) or 0
    return Classification(values[best], probs[best], dict(zip(texts, probs)), Usage(prompt * len(texts), 0))


def classify_by_answer(backend: Backend, messages: list[dict], texts: list[str], values: list, listed: str) -> Classification:
    """Ask for the label; fall back to a constrained/validated extraction if the reply is not one."""
    question = [*messages[:-1], {**messages[-1], "content": messages[-1]["content"] + f"\nAnswer with exactly one of: {listed}."}]
    reply = backend.chat(question, max_tokens=16, logprobs=0 if "logprobs" in backend.capabilities else None)
    answer = reply.text.strip().strip(".").strip()
    match = next((i for i, t in enumerate(texts) if t == answer), None)
    if match is None:
        match = next((i for i, t in enumerate(texts) if t.lower() == answer.lower()), None)
    if match is not None:
        confidence = math.exp(sum(lp.logprob for lp in reply.logprobs)) if reply.logprobs else None
        return Classification(values[match], confidence, None, reply.usage)
    label_model = create_model("Label", label=(typing.Literal[tuple(texts)], ...))  # type: ignore[valid-type]
    result = extract(backend, label_model, question, max_retries=1, max_tokens=64)
    return Classification(values[texts.index(result.value.label)], None, None, reply.usage + result.usage)
