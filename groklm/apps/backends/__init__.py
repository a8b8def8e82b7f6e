"""Backends: one way for applications to talk to a model, wherever the model runs.

    backend = load_backend("local:runs/chat")                          # a groklm run, our Engine
    backend = load_backend("hf:path/to/checkpoint")                    # a transformers directory
    backend = load_backend("openai:http://127.0.0.1:8000/v1#my-model")  # any OpenAI-compatible API
    reply = backend.chat([{"role": "user", "content": "Hi"}], max_tokens=32)
    reply.text, reply.usage, reply.finish_reason, reply.logprobs, reply.tool_calls

    base.py     the protocol every backend implements (Backend) and its types
    local.py    a groklm run on the inference engine
    hf.py       a transformers checkpoint, through the reference decoder
    openai.py   an OpenAI-compatible HTTP API
"""

from __future__ import annotations

from groklm.apps.backends.base import Backend, BackendError, ChatOptions, Logprob, Reply, Usage
from groklm.apps.backends.hf import HFBackend
from groklm.apps.backends.local import LocalBackend
from groklm.apps.backends.openai import OpenAIBackend
from groklm.errors import ConfigError

__all__ = ["Backend", "BackendError", "ChatOptions", "Logprob", "Reply", "Usage", "LocalBackend", "HFBackend",
           "OpenAIBackend", "KINDS", "load_backend"]

KINDS = ("local", "hf", "openai")


def load_backend(spec: str | Backend, **kwargs) -> Backend:
    """`local:RUN`, `hf:DIR` or `openai:BASE_URL[#MODEL]` -> a Backend (a Backend passes through).

    Without #MODEL, the openai backend asks the server's /models and takes the first one."""
    if isinstance(spec, Backend):
        return spec
    kind, sep, rest = str(spec).partition(":")
    if not sep or kind not in KINDS or not rest:
        raise ConfigError(f"unknown backend {spec!r}: use local:RUN_DIR, hf:CHECKPOINT_DIR or openai:BASE_URL#MODEL")
    if kind == "local":
        return LocalBackend(rest, **kwargs)
    if kind == "hf":
        return HFBackend(rest, **kwargs)
    url, _, model = rest.partition("#")
    return OpenAIBackend(url, model or None, **kwargs)
