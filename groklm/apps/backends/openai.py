"""openai: any OpenAI-compatible HTTP endpoint (groklm serve, vLLM, llama.cpp, Ollama, OpenAI).

    backend = load_backend("openai:http://127.0.0.1:8000/v1#my-model")

API keys never go in the spec string (it ends up in shell history and traces): the backend
reads $OPENAI_API_KEY, or takes `api_key=` in code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context

import httpx

from groklm.apps.backends.base import Backend, BackendError, ChatOptions, Logprob, Reply, Usage
from groklm.infer.tool_calls import ToolCall


class OpenAIBackend(Backend):
    """POST {base_url}/chat/completions with httpx: groklm serve, vLLM, llama.cpp, Ollama, OpenAI.

    json_schema goes out as response_format {"type": "json_schema", ...}; a server that rejects
    it makes `extract` fall back to prompting (see groklm.apps.structured)."""

    kind, provider = "openai", "openai"
    capabilities = frozenset({"json_schema", "tools", "logprobs"})

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None,
                 timeout: float = 120.0, transport=None):
        api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(base_url=self.base_url + "/", headers=headers, timeout=timeout, transport=transport)
        super().__init__(model or self._first_model())

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise BackendError(f"{self.base_url}/{path}: {type(error).__name__}: {error}") from error
        if response.status_code >= 400:
            raise BackendError(f"{self.base_url}/{path} answered {response.status_code}: {error_text(response)}",
                               response.status_code)
        return response

    def _first_model(self) -> str:
        models = self._request("GET", "models").json().get("data") or []
        if not models:
            raise BackendError(f"{self.base_url}/models lists no model; name one: openai:{self.base_url}#MODEL")
        return models[0]["id"]

    def _body(self, messages: list[dict], opts: ChatOptions, stream: bool) -> dict:
        body: dict = {"model": self.model, "messages": messages, "max_tokens": opts.max_tokens,
                      "temperature": opts.temperature, "top_p": opts.top_p}
        if opts.seed is not None:
            body["seed"] = opts.seed
        if opts.stop:
            body["stop"] = opts.stop
        if opts.logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = opts.logprobs
        if opts.json_schema is not None:
            name = "".join(c if c.isalnum() or c in "_-" else "_" for c in str(opts.json_schema.get("title", "reply")))
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": name[:64] or "reply", "schema": opts.json_schema, "strict": True}}
        if opts.tools:
            body["tools"] = opts.tools
            if opts.tool_choice is not None:
                body["tool_choice"] = opts.tool_choice
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def _chat(self, messages: list[dict], opts: ChatOptions) -> Reply:
        data = self._request("POST", "chat/completions", json=self._body(messages, opts, False)).json()
        try:
            choice = data["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"{self.base_url}/chat/completions sent a reply without choices: {str(data)[:200]}") from None
        calls = [ToolCall(c["function"]["name"], c["function"].get("arguments") or "{}", c.get("id") or f"call_{i}")
                 for i, c in enumerate(message.get("tool_calls") or [])]
        usage = data.get("usage") or {}
        logprobs = None
        if choice.get("logprobs") and choice["logprobs"].get("content") is not None:
            logprobs = [Logprob(t["token"], t["logprob"], [(a["token"], a["logprob"]) for a in t.get("top_logprobs") or []])
                        for t in choice["logprobs"]["content"]]
        return Reply(message.get("content") or "", choice.get("finish_reason") or "stop",
                     Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0),
                     data.get("model") or self.model, logprobs, calls)

    def chat_many(self, conversations: Sequence[Sequence[dict]], **options) -> list[Reply]:
        """All the requests in flight at once, one thread each (a server batches them as it
        batches any clients' requests); the replies in order. Each thread runs in a copy of the
        caller's context, so its span is a child of the caller's."""
        if not conversations:
            return []
        with ThreadPoolExecutor(max_workers=len(conversations)) as pool:
            futures = [pool.submit(copy_context().run, self.chat, messages, **options) for messages in conversations]
            return [future.result() for future in futures]

    def _stream(self, messages: list[dict], opts: ChatOptions) -> Iterator[str]:
        body = self._body(messages, opts, True)
        try:
            with self.client.stream("POST", "chat/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise BackendError(f"{self.base_url}/chat/completions answered {response.status_code}: "
                                       f"{error_text(response)}", response.status_code)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[len("data:"):].strip()
                    if payload == "[DONE]":
                        return
                    for choice in json.loads(payload).get("choices") or []:
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            yield text
        except httpx.HTTPError as error:
            raise BackendError(f"{self.base_url}/chat/completions: {type(error).__name__}: {error}") from error


def error_text(response) -> str:
    """The message of an OpenAI-style error body, else the start of the body."""
    try:
        error = response.json().get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    except (ValueError, AttributeError):
        pass
    return response.text[:300]
