"""Applications on top of a model: backends, structured output, tools, agents, evals, tracing, retrieval (rag).

    from groklm.apps import load_backend, extract, classify, Agent
    backend = load_backend("local:runs/chat")        # or hf:DIR, openai:URL#MODEL
    person = extract(backend, Person, "Maria is 34.").value

    backends/      one protocol (chat, stream, token counts, logprobs, score): local | hf | openai
    structured.py  extract() -> validated Pydantic objects (grammar, re-ask); classify()
    judge.py       llm_validator(): a rule in words, judged by a second model, re-asked on failure
    tools.py       typed Python functions as tools; calculator; search over a RAG index
    agent.py       Agent: ReAct and native tool-calling loops
    evals.py       datasets through targets, scored by checks, compared side by side
    tracing.py     every backend and tool call a span, in SQLite (OpenTelemetry GenAI names)
    rag/           retrieval-augmented generation
"""

from __future__ import annotations

from groklm.apps import evals, tracing
from groklm.apps.agent import Agent, AgentResult
from groklm.apps.backends import Backend, BackendError, HFBackend, LocalBackend, OpenAIBackend, Reply, Usage, load_backend
from groklm.apps.judge import JudgeUnavailable, Verdict, grounded_check, llm_validator
from groklm.apps.structured import Classification, Extraction, ExtractionError, classify, extract
from groklm.apps.tools import Tool, calculator, search_tool

__all__ = [
    "Backend", "BackendError", "Reply", "Usage", "LocalBackend", "HFBackend", "OpenAIBackend", "load_backend",
    "extract", "Extraction", "ExtractionError", "classify", "Classification",
    "llm_validator", "grounded_check", "Verdict", "JudgeUnavailable",
    "Tool", "calculator", "search_tool",
    "Agent", "AgentResult",
    "evals", "tracing",
]
