"""The request bodies the server accepts: OpenAI's field names, ranges and defaults.

Pydantic checks types and ranges before anything reaches the engine; a bad field becomes a
400 naming the field. Unknown fields are refused too (`extra="forbid"`), so a typo such as
"temprature" is an error instead of a silent default. Types are strict, as OpenAI's API is:
nothing is coerced, so `"max_tokens": "4"`, `"max_tokens": true`, `"n": 2.0` and
`"stream": "yes"` are refused rather than read as 4, 1, 2 and true (an integer is still a
valid number: `"temperature": 1`), and NaN and Infinity (which Python's JSON parser lets
through) are not numbers a request may hold. Messages and tools stay plain dicts
here: `groklm.infer.tool_calls` validates them, the same way for the server and the apps.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_N = 8  # choices per request; each takes an engine slot
MAX_EMBED_INPUTS = 2048  # texts per embeddings request, as OpenAI allows
INT64 = 2**63


class ApiError(Exception):
    """A request the server refuses: the HTTP status, what is wrong, the field at fault (OpenAI's
    `param`) and a machine-readable code."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class StreamOptions(Strict):
    include_usage: bool = False  # a last chunk with the token counts (and no choices)


class JsonSchemaSpec(Strict):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: bool | None = None  # always enforced here: constrained decoding cannot produce anything else


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


class Sampling(Strict):
    """Fields shared by /v1/chat/completions and /v1/completions."""

    @model_validator(mode="before")
    @classmethod
    def null_means_default(cls, data: Any) -> Any:
        """OpenAI accepts `"temperature": null` and the like for "use the default"; so do we."""
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data

    model: str
    max_tokens: int | None = Field(None, ge=1)  # default: the rest of the context
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)  # not OpenAI's, but common (vLLM, llama.cpp)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    seed: int | None = Field(None, ge=-INT64, lt=INT64)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # accepted and ignored


class ChatCompletionRequest(Sampling):
    messages: list[Any] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name of max_tokens
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Any] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool = True  # False: at most one call per reply
    response_format: ResponseFormat | None = None
    metadata: dict[str, str] | None = None  # accepted and ignored
    store: bool | None = None  # accepted and ignored


class CompletionRequest(Sampling):
    prompt: str | list[int] | list[str] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=5)  # the legacy API's top-k alternatives


class EmbeddingRequest(Strict):
    model: str
    input: str | Annotated[list[str], Field(min_length=1, max_length=MAX_EMBED_INPUTS)]
    encoding_format: Literal["float", "base64"] = "float"  # base64: little-endian float32 bytes
    user: str | None = None  # accepted and ignored


class FeedbackRequest(Strict):
    """A verdict on a completion this server returned: 1 (good) or -1 (bad), and optionally the
    answer it should have given."""

    completion_id: str = Field(min_length=1, max_length=200)
    rating: int  # strict: true is not 1 (a Literal[1, -1] would take it, as true == 1 in Python)
    correction: str | None = None

    @field_validator("rating")
    @classmethod
    def thumbs(cls, rating: int) -> int:
        if rating not in (1, -1):
            raise ValueError("must be 1 (good) or -1 (bad)")
        return rating
