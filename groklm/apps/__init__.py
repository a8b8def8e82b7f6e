"""Applications on top of a model: backends, structured output, tools, agents, evals, tracing, retrieval (rag).

    from groklm.apps import load_backend, extract, classify, Agent
    backend = load_backend("local:runs/chat")        # or hf:DIR, openai:URL#MODEL
    person = extract(backend, Person, "Maria is 34.").value

    backends.py    one protocol (chat, stream, token counts, logprobs, score): local | hf | openai
    structured.py  extract() -> validated Pydantic objects (grammar, re-ask); classify()
    tools.py       typed Python functions as tools; calculator; search over a RAG index
    agent.py       Agent: ReAct and native tool-calling loops
    evals.py       datasets through targets, scored by checks, compared side by side
    tracing.py     every backend and tool call a span, in SQLite (OpenTelemetry GenAI names)
    rag/           retrieval-augmented generation

Names are imported on first use, so `groklm --help` stays fast.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "Backend": "groklm.apps.backends",
    "BackendError": "groklm.apps.backends",
    "Reply": "groklm.apps.backends",
    "Usage": "groklm.apps.backends",
    "LocalBackend": "groklm.apps.backends",
    "HFBackend": "groklm.apps.backends",
    "OpenAIBackend": "groklm.apps.backends",
    "load_backend": "groklm.apps.backends",
    "extract": "groklm.apps.structured",
    "Extraction": "groklm.apps.structured",
    "ExtractionError": "groklm.apps.structured",
    "classify": "groklm.apps.structured",
    "Classification": "groklm.apps.structured",
    "Tool": "groklm.apps.tools",
    "calculator": "groklm.apps.tools",
    "search_tool": "groklm.apps.tools",
    "Agent": "groklm.apps.agent",
    "AgentResult": "groklm.apps.agent",
    "evals": "groklm.apps.evals",
    "tracing": "groklm.apps.tracing",
}
__all__ = list(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        module = importlib.import_module(_HOMES[name])
        return module if module.__name__.endswith("." + name) else getattr(module, name)
    raise AttributeError(f"module 'groklm.apps' has no attribute {name!r}")
