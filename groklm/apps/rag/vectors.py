"""Nearest-neighbour search over unit vectors: exact, and approximate for millions of chunks.

Exact search is one matrix-vector product: the cosine of the query with every chunk, then the
k largest. It is always right, and fast up to a few hundred thousand chunks (it reads every
vector: 1M x 384 floats is 1.5 GB per query).

Approximate search (FAISS "IVF", an inverted file) groups the vectors into `n_lists` cells by
k-means, and at query time compares the query only with the vectors of the `n_probe` cells
whose centres are nearest to it. A neighbour that sits just across a cell border can be
missed, so it trades recall for speed. The cells hold the vectors as 8-bit codes (FAISS
"SQ8", a quarter of the floats' size), and the best RERANK_DEPTH candidates they yield are
scored again exactly against the float vectors, which the index keeps anyway: the answer's
scores are exact cosines, and the index file adds a quarter of the vectors' size, not a second
copy of them. The kind and its parameters follow the collection's size (`plan`):

  * under EXACT_BELOW vectors, one cell holding everything, scanned whole: exact, and at
    ~0.5 ms per query on one core there is nothing worth trading recall for;
  * above, ~8 sqrt(n) cells (a power of two: 8192 at 1M) and N_PROBE of them searched.

Measured (benchmarks/retrieve.py's synthetic 384-d vectors around one topic per 100; single
queries on one core of a shared 2-core x86 machine with AVX-512; FAISS 1.15; builds on one
core too) against FAISS's exact IndexFlatIP on the same core: at 1M vectors this finds 98.5%
of the true top 10 52x faster than exact (1.1 ms against 56 ms, p50), in a 405 MB index that
takes 5 minutes to build on one core. Fewer, bigger cells build faster but miss more, and
probing more of them barely helps: with 4096 cells, 95% at n_probe 32 and 96.6% at 256 (cells
that mix several topics split some, and the cells holding a topic's strays rank low for its
queries); the earlier design (sqrt(n) = 1000 cells of floats, an eighth of them probed) found
84%. The 8-bit codes lose nothing against float cells once re-scored, at a quarter of the
size. HNSW graphs (IndexHNSWFlat, M 16, efConstruction 40) took 6 minutes to build at 1M on
one core and found only 52% at efSearch 128 on this clustered data; a better graph would take
much longer to build, and it keeps its own copy of the float vectors.
How many cells suit real embeddings depends on how they cluster, which synthetic data only
imitates. Training cost grows with n_lists squared: at 10M vectors (32768 cells) a build would
take over an hour on one core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from groklm.errors import ConfigError

EXACT_BELOW = 10_000  # vectors; below this `plan` picks one cell, scanned whole
N_PROBE = 32  # cells searched per query (see the module docstring for the measurement)
RERANK_DEPTH = 40  # candidates from the 8-bit codes that are scored again exactly
TRAIN_PER_CELL = 40  # k-means needs a few dozen points per centre, not all of them


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


@dataclass(frozen=True)
class Plan:
    """The index `ApproximateIndex.build` makes for a collection of a given size."""

    kind: str  # "exact" (one cell, scanned whole) or "ivf-sq8"
    n_lists: int
    n_probe: int


def plan(n: int) -> Plan:
    if n < EXACT_BELOW:
        return Plan("exact", 1, 1)
    # More, smaller cells than the textbook sqrt(n): cells of ~120 vectors split fewer clusters
    # (higher recall) and a query scans fewer vectors, at the price of a longer k-means (~5
    # minutes on one core at 1M vectors).
    n_lists = min(2 ** round(math.log2(8 * math.sqrt(n))), n // TRAIN_PER_CELL)
    return Plan("ivf-sq8", n_lists, min(N_PROBE, n_lists))


def kind_of(index) -> str | None:
    """The Plan kind a FAISS index read from a file was built as; None for any other."""
    faiss = import_faiss()
    if isinstance(index, faiss.IndexIVFFlat) and index.nlist == 1:
        return "exact"
    if isinstance(index, faiss.IndexIVFScalarQuantizer) and index.sq.qtype == faiss.ScalarQuantizer.QT_8bit:
        return "ivf-sq8"
    return None


class ApproximateIndex:
    """A FAISS inverted-file index over unit vectors, searched by inner product (cosine), whose
    candidates are scored again exactly against `vectors` (the float vectors it was built from)."""

    def __init__(self, index, vectors: np.ndarray, n_probe: int):
        self.index, self.vectors, self.n_probe = index, vectors, n_probe
        self.index.nprobe = n_probe

    @classmethod
    def build(cls, vectors: np.ndarray, seed: int = 0) -> ApproximateIndex:
        faiss = import_faiss()
        n, dim = vectors.shape
        chosen = plan(n)
        quantizer = faiss.IndexFlatIP(dim)
        if chosen.kind == "exact":
            index = faiss.IndexIVFFlat(quantizer, dim, 1, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, chosen.n_lists, faiss.ScalarQuantizer.QT_8bit,
                                                  faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = vectors[np.sort(rng.choice(n, size=min(n, TRAIN_PER_CELL * chosen.n_lists), replace=False))]
        index.cp.seed = seed
        index.cp.spherical = True  # centres of unit vectors, compared by inner product: keep them unit too
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        for start in range(0, n, 100_000):  # add in slices: no second full copy of a memmap
            index.add(np.ascontiguousarray(vectors[start : start + 100_000], dtype=np.float32))
        return cls(index, vectors, chosen.n_probe)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries (m, dim) -> (scores (m, k), positions (m, k)); missing results are position -1."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        _, candidates = self.index.search(queries, max(k, RERANK_DEPTH))
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        positions = np.full((len(queries), k), -1, dtype=np.int64)
        for row, (query, found) in enumerate(zip(queries, candidates)):
            found = found[found >= 0]
            exact = self.vectors[found] @ query  # the 8-bit codes only approximate the scores: rank by the floats
            best = top_k(exact, k)
            scores[row, : len(best)], positions[row, : len(best)] = exact[best], found[best]
        return scores, positions

    def save(self, path: str | Path) -> None:
        import_faiss().write_index(self.index, str(path))

    @classmethod
    def load(cls, path: str | Path, vectors: np.ndarray, n_probe: int | None = None) -> ApproximateIndex | None:
        """The index saved at `path` over `vectors`, or None when it is not what `build` would
        make of them now (another count or width, or another kind or number of cells than `plan`
        picks for that many, such as a file from an older groklm): build it again then."""
        index = import_faiss().read_index(str(path))
        chosen = plan(len(vectors))
        if (index.ntotal, index.d) != vectors.shape or kind_of(index) != chosen.kind or index.nlist != chosen.n_lists:
            return None
        return cls(index, vectors, n_probe or index.nprobe)
