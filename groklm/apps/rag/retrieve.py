"""A query -> the best chunks: by meaning (dense), by words (BM25), or both (hybrid).

  * dense: cosine of the query's embedding with each chunk's. Finds paraphrases ("car" for
    "automobile"), but can miss an exact rare word: a product code, a name, an error message.
  * bm25: the classic keyword score. Each query word adds more the rarer it is in the
    collection (IDF), with diminishing returns for repeats and a discount for long chunks.
    Exact and explainable, blind to synonyms.
  * hybrid: reciprocal rank fusion (RRF) of the two rankings: a chunk scores
    sum(1 / (60 + rank)) over the lists it appears in. Only ranks are used, so the two
    incomparable score scales never need calibrating, and a chunk both lists like rises.

Every hit also carries `similarity`, the cosine of the query with the chunk whatever the
mode, because that is the one score with a fixed meaning: answer() uses it to decide whether
anything relevant was found at all.

Two optional second-stage steps (rerank.py) wrap any mode: `rewrite` turns the query into
more queries, whose rankings are fused with the original's by RRF; `reranker` re-scores the
top `rerank_depth` hits with a slower, more exact judge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from groklm.apps.rag.chunk import Chunk
from groklm.apps.rag.rerank import RERANK_DEPTH, rerank
from groklm.apps.rag.vectors import exact_search, top_k
from groklm.errors import ConfigError

MODES = ("dense", "bm25", "hybrid")
RRF_K = 60  # damps the top ranks' weight; 60 is the value of the paper that introduced RRF
FUSION_DEPTH = 50  # how deep each list goes into the fusion


@dataclass
class Hit:
    chunk: Chunk
    score: float  # the mode's own score: cosine (dense), BM25, or RRF (hybrid)
    similarity: float  # cosine of the query and the chunk, in every mode

    def to_dict(self) -> dict:
        c = self.chunk
        return {"source": c.source, "chunk_id": c.id, "score": round(self.score, 6),
                "similarity": round(self.similarity, 6), "metadata": c.metadata, "text": c.text}


def search(index, query: str, k: int = 5, mode: str = "hybrid", filters: dict | None = None,
           approximate: bool = False, rewrite=None, reranker=None, rerank_depth: int = RERANK_DEPTH) -> list[Hit]:
    """The k best chunks of `index` for `query`, best first.

    rewrite: None, or query -> more queries (rerank.Rewriter); all are searched, with the
    original, and fused by RRF. reranker: None, or a reranker (rerank.py) that re-scores the
    first stage's top `rerank_depth`; past that depth the first stage's order follows."""
    if mode not in MODES:
        raise ConfigError(f"unknown search mode {mode!r}; choose from {', '.join(MODES)}")
    if rerank_depth < 1:
        raise ConfigError(f"rerank_depth must be >= 1, got {rerank_depth}")
    queries = list(dict.fromkeys([query, *rewrite(query)])) if rewrite is not None else [query]
    depth = max(k, rerank_depth) if reranker is not None else k
    vectors = index.embedder.embed(queries)
    rankings = [rank(index, q, v, depth, mode, filters, approximate) for q, v in zip(queries, vectors)]
    positions, scores = rankings[0] if len(rankings) == 1 else reciprocal_rank_fusion([p for p, _ in rankings], depth)
    chunks = index.chunks_at(positions)
    # The best cosine with any of the queries: a chunk one rewrite found is as relevant as its match.
    similarities = (index.vectors[positions] @ vectors.T).max(axis=1) if len(positions) else np.zeros(0)
    hits = [Hit(c, float(s), float(sim)) for c, s, sim in zip(chunks, scores, similarities)]
    if reranker is not None:
        hits = rerank(query, hits[:rerank_depth], reranker) + hits[rerank_depth:]
    return hits[:k]


def rank(index, query: str, query_vector: np.ndarray, k: int, mode: str, filters: dict | None = None,
         approximate: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(vector-row positions, scores) of the top k for one mode."""
    allowed = index.filter_positions(filters)
    if mode == "dense":
        return dense_ranking(index, query_vector, k, allowed, approximate)
    if mode == "bm25":
        return bm25_ranking(index, query, k, allowed)
    depth = max(k, FUSION_DEPTH)
    dense, _ = dense_ranking(index, query_vector, depth, allowed, approximate)
    keyword, _ = bm25_ranking(index, query, depth, allowed)
    return reciprocal_rank_fusion([dense, keyword], k)


def dense_ranking(index, query_vector: np.ndarray, k: int, allowed: np.ndarray | None = None,
                  approximate: bool = False) -> tuple[np.ndarray, np.ndarray]:
    if allowed is not None:  # a filtered subset is searched exactly: usually small, always right
        scores, found = exact_search(index.vectors[allowed], query_vector, k)
        return allowed[found], scores
    if approximate and len(index):
        scores, positions = index.approximate.search(query_vector[None, :], k)
        keep = positions[0] >= 0
        return positions[0][keep], scores[0][keep]
    scores, positions = exact_search(index.vectors, query_vector, k)
    return positions, scores


def bm25_ranking(index, query: str, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Chunks sharing at least one (non-stop) word with the query, by BM25."""
    scores = index.bm25_scores(query)
    if allowed is not None:
        mask = np.zeros(len(scores), dtype=bool)
        mask[allowed] = True
        scores = np.where(mask, scores, 0.0)
    positions = top_k(scores, k)
    positions = positions[scores[positions] > 0]
    return positions, scores[positions]


def reciprocal_rank_fusion(rankings: list[np.ndarray], k: int, rrf_k: int = RRF_K) -> tuple[np.ndarray, np.ndarray]:
    """Fuse rankings (best first) into one: score = sum over lists of 1 / (rrf_k + rank)."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank_, item in enumerate(ranking, start=1):
            fused[int(item)] = fused.get(int(item), 0.0) + 1.0 / (rrf_k + rank_)
    best = sorted(fused.items(), key=lambda pair: (-pair[1], pair[0]))[:k]
    return np.asarray([i for i, _ in best], dtype=np.int64), np.asarray([s for _, s in best])
