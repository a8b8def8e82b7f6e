"""Nearest-neighbour search over unit vectors: exact, and approximate for millions of chunks.

Exact search is one matrix-vector product: the cosine of the query with every chunk, then the
k largest. It is always right, and fast up to a few hundred thousand chunks (it reads every
vector: 1M x 384 floats is 1.5 GB per query).

Approximate search (FAISS "IVF", an inverted file) groups the vectors into `n_lists` cells by
k-means, and at query time compares the query only with the vectors of the `n_probe` cells
whose centres are nearest to it. A neighbour that sits just across a cell border can be
missed, so it trades recall for speed; benchmarks/retrieve.py measures both. We chose IVF
over HNSW graphs because it builds in seconds rather than many minutes at a million vectors
on a small CPU, and FAISS because it installs as a wheel (faiss-cpu); it is optional.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from groklm.errors import ConfigError


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k largest scores, best first."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    best = np.argpartition(-scores, k - 1)[:k]  # the k largest, unordered: O(n), not a full sort
    return best[np.argsort(-scores[best], kind="stable")]


def exact_search(vectors: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, positions) of the k vectors most similar to `query` (all unit length: cosine)."""
    # One query is a matrix-vector product, bound by memory bandwidth rather than arithmetic;
    # einsum runs it on one core, where a threaded BLAS call would spend longer waking (and on
    # a busy machine, waiting for) its threads than computing.
    scores = np.einsum("nd,d->n", vectors, query)
    positions = top_k(scores, k)
    return scores[positions], positions


def import_faiss():
    try:
        import faiss
    except ImportError as error:
        raise ConfigError("approximate search needs FAISS: pip install faiss-cpu") from error
    return faiss


class ApproximateIndex:
    """A FAISS inverted-file index over unit vectors, searched by inner product (cosine)."""

    def __init__(self, index, n_probe: int):
        self.index, self.n_probe = index, n_probe
        self.index.nprobe = n_probe

    @classmethod
    def build(cls, vectors: np.ndarray, n_lists: int | None = None, n_probe: int | None = None, seed: int = 0) -> ApproximateIndex:
        faiss = import_faiss()
        n, dim = vectors.shape
        # ~sqrt(n) cells of ~sqrt(n) vectors each balances the two halves of a query's work:
        # comparing with every cell centre, and scanning the chosen cells.
        n_lists = n_lists or max(1, min(int(math.sqrt(n)), n // 40))
        # Searching an eighth of the cells: on clustered data that finds nearly all of the true
        # top 10 up to ~100k vectors, most of it at 1M (benchmarks/retrieve.py), still many
        # times faster than exact search. A RAG prompt needs the right chunks more than 1 ms.
        n_probe = min(n_lists, n_probe or max(8, n_lists // 8))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, n_lists, faiss.METRIC_INNER_PRODUCT)
        # k-means needs a few dozen points per centre, not all of them: train on a sample.
        rng = np.random.default_rng(seed)
        sample = vectors[np.sort(rng.choice(n, size=min(n, 64 * n_lists), replace=False))]
        index.cp.seed = seed
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        for start in range(0, n, 100_000):  # add in slices: no second full copy of a memmap
            index.add(np.ascontiguousarray(vectors[start : start + 100_000], dtype=np.float32))
        return cls(index, n_probe)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries (m, dim) -> (scores (m, k), positions (m, k)); missing results are position -1."""
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    def save(self, path: str | Path) -> None:
        import_faiss().write_index(self.index, str(path))

    @classmethod
    def load(cls, path: str | Path, n_probe: int | None = None) -> ApproximateIndex:
        index = import_faiss().read_index(str(path))
        return cls(index, n_probe or index.nprobe)
