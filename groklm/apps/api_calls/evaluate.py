"""Does a model call the right API, with the right arguments, from its documentation?

Each test request goes to a backend with the APIs a condition offers as tools:

    none        no documentation: what the model knows by heart
    retrieved   the retriever's top-k pages (from every API, held-out ones included)
    oracle      the right API's page alone: the ceiling a perfect retriever would give

and its reply is graded by the first `CALL name({...})` line it writes (the protocol of
groklm.infer.tool_calls, which the training chats teach):

    correct          the request's API, and arguments equal after parsing (defaults filled in)
    wrong_arguments  the request's API, other arguments (or arguments that are not JSON)
    wrong_api        another API of the catalog
    hallucinated     an API that does not exist (Gorilla's hallucination)
    no_call          no call at all (an abstention, or prose)

A call to an API the prompt did not offer is graded by its name like any other: one of the
catalog's is "wrong_api", an invented one "hallucinated".
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable

from groklm.apps.api_calls.catalog import Catalog
from groklm.apps.api_calls.dataset import Example, Retriever, prompt
from groklm.apps.backends import Backend
from groklm.errors import ConfigError
from groklm.infer.tool_calls import CALL_LINE_RE

CONDITIONS = ("none", "retrieved", "oracle")
OUTCOMES = ("correct", "wrong_arguments", "wrong_api", "hallucinated", "no_call")


def first_call(text: str) -> tuple[str, str] | None:
    """(name, arguments text) of the first CALL line, whatever name it gives."""
    for line in text.splitlines():
        match = CALL_LINE_RE.fullmatch(line.strip())
        if match:
            return match.group(1), match.group(2)
    return None


def grade(catalog: Catalog, example: Example, call: tuple[str, str] | None) -> str:
    if call is None:
        return "no_call"
    name, arguments = call
    api = catalog.get(name)
    if api is None:
        return "hallucinated"
    if name != example.api:
        return "wrong_api"
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError:
        return "wrong_arguments"
    same = isinstance(parsed, dict) and api.canonical(parsed) == api.canonical(example.arguments)
    return "correct" if same else "wrong_arguments"


def offered(condition: str, catalog: Catalog, example: Example, retriever: Retriever | None) -> list[str]:
    """The APIs whose pages the prompt shows."""
    if condition == "none":
        return []
    if condition == "oracle":
        return [example.api]
    if retriever is None:
        raise ConfigError("the retrieved condition needs a retriever (an index of the API pages)")
    return retriever(example.request)


def evaluate_calls(backend: Backend, catalog: Catalog, items: list[Example], condition: str,
                   retriever: Retriever | None = None, max_tokens: int = 64, batch_size: int = 8,
                   progress: Callable[[int], None] | None = None) -> dict:
    """Rates of each outcome over `items`, the retriever's recall (the right page offered), the
    seconds per request, and every request's row (what was offered, the call, the outcome)."""
    if condition not in CONDITIONS:
        raise ConfigError(f"unknown condition {condition!r}; conditions are {', '.join(CONDITIONS)}")
    rows, seconds = [], 0.0
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        pages = [offered(condition, catalog, e, retriever) for e in batch]
        conversations = [prompt(catalog, e.request, p) for e, p in zip(batch, pages)]
        began = time.perf_counter()
        # The pages go in as the system message's tools section, rendered here rather than passed
        # as `tools`, so every backend (local, hf, an OpenAI-compatible server) sees the same text
        # and requests with different pages share one batch. Greedy: the measure is of the model.
        replies = backend.chat_many(conversations, max_tokens=max_tokens, temperature=0.0)
        seconds += time.perf_counter() - began
        for example, page, reply in zip(batch, pages, replies):
            call = first_call(reply.text)
            rows.append({"request": example.request, "api": example.api, "arguments": example.arguments,
                         "offered": page, "reply": reply.text, "call": list(call) if call else None,
                         "outcome": grade(catalog, example, call)})
        if progress:
            progress(len(batch))
    counts = Counter(row["outcome"] for row in rows)
    n = max(len(rows), 1)
    report = {"condition": condition, "n": len(rows), **{o: counts[o] / n for o in OUTCOMES},
              "seconds_per_request": seconds / n, "rows": rows}
    if condition == "retrieved":
        report["recall"] = sum(row["api"] in row["offered"] for row in rows) / n
    return report
