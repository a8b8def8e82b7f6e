"""How good is retrieval? Recall@k, MRR@10 and nDCG@10 over queries with known answers.

A queries file has one JSON object per line:

    {"query": "how do I resume training?", "relevant": ["docs/train.md"]}
    {"query": "what is RRF?", "relevant": ["3f9a0c2e11d4b7a8"]}

`relevant` lists chunk ids (judged chunk by chunk) or source files (judged document by
document: a ranking of chunks becomes a ranking of their files, each file at its best rank).
A file may be named by its full path or by any trailing part of it ("docs/train.md").
A relevant entry that names nothing in the index (a file that was empty, unreadable or never
indexed) cannot be found by any retriever: it counts as a miss, and the query keeps it in
`absent` so the report can say how many there were.

For one query with relevant set R and ranking r1, r2, ...:

    recall@k  = |R among the first k| / |R|            did we find them at all?
    MRR@10    = 1 / rank of the first relevant one     how soon does the first one come?
                (0 if none in the first 10)
    nDCG@10   = DCG / ideal DCG, DCG = sum over relevant ranks i <= 10 of 1 / log2(i + 1)
                                                       are all of them near the top?

and each metric is averaged over the queries; with `latency=True`, so is `ms_per_query`, the
time one query's retrieval took (embedding it included).

Given a second stage (rerank.py: a query rewriter, a reranker, or both), the mode
`stage_mode` is measured again with each: rows "hybrid+rewrite", "hybrid+rerank" and
"hybrid+rewrite+rerank" beside the plain "hybrid", so what a stage adds to the metrics and
to the latency can be read off side by side.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from groklm.apps.rag.rerank import RERANK_DEPTH
from groklm.apps.rag.retrieve import MODES, search
from groklm.errors import DataError
from groklm.jsonl import read_jsonl

ABSENT = "\0absent:"  # prefix of a relevant entry that is in no ranking (no path or chunk id has a NUL)


@dataclass
class Query:
    text: str
    relevant: set[str]
    by_source: bool  # True: `relevant` holds sources and hits are judged by their file
    absent: list[str] = field(default_factory=list)  # relevant entries that are not in the index


def recall_at_k(ranking: list[str], relevant: set[str], k: int) -> float:
    return len(set(ranking[:k]) & relevant) / len(relevant)


def reciprocal_rank(ranking: list[str], relevant: set[str], k: int = 10) -> float:
    return next((1.0 / i for i, item in enumerate(ranking[:k], start=1) if item in relevant), 0.0)


def ndcg_at_k(ranking: list[str], relevant: set[str], k: int = 10) -> float:
    dcg = sum(1.0 / math.log2(i + 1) for i, item in enumerate(ranking[:k], start=1) if item in relevant)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(relevant), k) + 1))
    return dcg / ideal


def read_queries(path: str | Path, index) -> list[Query]:
    """Parse a queries file, resolving each relevant entry to a chunk id or a source of `index`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"queries file {path} does not exist")
    sources = index.sources()

    def query(item: object) -> Query:
        try:
            text, relevant = item["query"], item["relevant"]
        except (KeyError, TypeError) as error:
            raise DataError(f"expected {{\"query\": ..., \"relevant\": [...]}} ({error})") from error
        relevant = [relevant] if isinstance(relevant, str) else list(relevant)
        if not relevant:
            raise DataError("'relevant' is empty")
        if len(index.positions_of(relevant)) == len(relevant):
            return Query(text, set(relevant), by_source=False)
        resolved = {name: resolve_source(name, sources, f"query {text!r}") for name in relevant}
        absent = [name for name, source in resolved.items() if source is None]
        # An absent entry stays in the relevant set under a name no ranking holds: a miss.
        return Query(text, {source or f"{ABSENT}{name}" for name, source in resolved.items()}, True, absent)

    queries = read_jsonl(path, query, allow_empty=True)
    if not queries:
        raise DataError(f"{path} holds no queries")
    return queries


def resolve_source(name: str, sources: list[str], where: str) -> str | None:
    """The one indexed source that `name` is, or ends with (as whole path components); None
    when nothing in the index is `name`. Several matches are an error: name more of the path."""
    tail = "/" + name.lstrip("./")
    matches = [s for s in sources if s == name or s.endswith(tail)]
    if len(matches) > 1:
        raise DataError(f"{where}: relevant {name!r} matches {len(matches)} sources in the index "
                        f"({', '.join(matches[:3])}); name more of its path")
    return matches[0] if matches else None


def absent_entries(queries: list[Query]) -> list[str]:
    """Every relevant entry of the queries that is not in the index (once per query naming it)."""
    return [name for query in queries for name in query.absent]


def ranking_for(index, query: Query, mode: str, depth: int, **stages) -> list[str]:
    """The query's ranking in `mode`: chunk ids, or sources (each at its best chunk's rank).
    stages: search()'s second-stage options (rewrite, reranker, rerank_depth)."""
    # Judging files, the top chunks may share a file: look deeper to rank `depth` files.
    hits = search(index, query.text, depth * (5 if query.by_source else 1), mode, **stages)
    if not query.by_source:
        return [hit.chunk.id for hit in hits]
    return list(dict.fromkeys(hit.chunk.source for hit in hits))[:depth]


def evaluate(index, queries: list[Query], k: int = 10, modes: tuple[str, ...] = MODES, rewrite=None, reranker=None,
             rerank_depth: int = RERANK_DEPTH, stage_mode: str = "hybrid", latency: bool = False) -> dict:
    """{row: {"recall@k": ..., "mrr@10": ..., "ndcg@10": ...}} averaged over the queries (and
    "ms_per_query" with `latency`): a row per mode, one per second-stage combination (module doc)."""
    plans = {mode: (mode, {}) for mode in modes}  # row name: (mode, search()'s second-stage options)
    rewriting, reranking = {"rewrite": rewrite}, {"reranker": reranker, "rerank_depth": rerank_depth}
    if rewrite is not None or reranker is not None:
        plans.setdefault(stage_mode, (stage_mode, {}))  # the baseline each stage is compared with
    if rewrite is not None:
        plans[f"{stage_mode}+rewrite"] = (stage_mode, rewriting)
    if reranker is not None:
        plans[f"{stage_mode}+rerank"] = (stage_mode, reranking)
    if rewrite is not None and reranker is not None:
        plans[f"{stage_mode}+rewrite+rerank"] = (stage_mode, rewriting | reranking)
    depth = max(k, 10)
    results = {}
    for name, (mode, options) in plans.items():
        totals = {f"recall@{k}": 0.0, "mrr@10": 0.0, "ndcg@10": 0.0} | ({"ms_per_query": 0.0} if latency else {})
        for query in queries:
            start = time.perf_counter()
            ranking = ranking_for(index, query, mode, depth, **options)
            if latency:
                totals["ms_per_query"] += (time.perf_counter() - start) * 1000
            totals[f"recall@{k}"] += recall_at_k(ranking, query.relevant, k)
            totals["mrr@10"] += reciprocal_rank(ranking, query.relevant)
            totals["ndcg@10"] += ndcg_at_k(ranking, query.relevant)
        results[name] = {metric: round(total / len(queries), 4) for metric, total in totals.items()}
    return results
