"""Retrieval benchmark: build time and query latency at 10k, 100k and 1M chunks. One JSON line.

Vectors are synthetic (embedding a million real chunks would take hours on a small CPU) but
shaped like real ones: 384-dimensional unit vectors scattered widely (cosine ~0.65 to their
centre) around one topic centre per 100 chunks, so that near neighbours exist and an
approximate index has structure to exploit. Queries are noisy copies of random stored
vectors. For each size:

  * store: building our persistent index (SQLite rows + vector file) through the public
    `Index.upsert`, one short synthetic document per chunk, with the vectors precomputed;
  * exact: our NumPy search (one matrix-vector product + partial sort) against the peer,
    FAISS's exact `IndexFlatIP`, on the same vectors: p50/p99 latency of single queries,
    each on one core (builds use every core);
  * approximate: the index `ApproximateIndex.build` makes (its kind chosen by size, see
    vectors.py): build time, index size, p50/p99 single-query latency on one core, timed in
    turns with FAISS's exact `IndexFlatIP` (the peer), `speedup` = the peer's p50 / ours, and
    recall@10 against the exact top 10; also at 4x n_probe (more cells searched: slower, higher
    recall). The JSON line's `ratio` and `recall_at_10` are those of the largest size.

    python benchmarks/retrieve.py [--sizes 10000,100000,1000000] [--queries 100]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from groklm.apps.rag.chunk import approx_tokens  # noqa: E402
from groklm.apps.rag.index import Index  # noqa: E402
from groklm.apps.rag.load import Document  # noqa: E402
from groklm.apps.rag.vectors import ApproximateIndex, exact_search, plan  # noqa: E402

DIM, CHUNKS_PER_TOPIC, K = 384, 100, 10


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def synthetic(n: int, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    topics = max(1, n // CHUNKS_PER_TOPIC)
    centres = unit(rng.standard_normal((topics, DIM), dtype=np.float32))
    vectors = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):  # in slices: the noise of a million rows at once is 1.5 GB
        rows = min(100_000, n - start)
        noise = rng.standard_normal((rows, DIM), dtype=np.float32) * 0.06
        vectors[start : start + rows] = unit(centres[rng.integers(0, topics, rows)] + noise)
    queries = unit(vectors[rng.integers(0, n, n_queries)] + rng.standard_normal((n_queries, DIM), dtype=np.float32) * 0.03)
    return vectors, queries


class PrecomputedEmbedder:
    """Hands out the benchmark's vectors in order, so the store build measures storage alone."""

    max_tokens = 512
    count_tokens = staticmethod(approx_tokens)
    spec = "benchmark"

    def __init__(self, vectors: np.ndarray):
        self.vectors, self.identity = vectors, {"backend": "benchmark", "dim": vectors.shape[1]}

    def embed(self, texts, progress=False):
        return self.vectors[: len(texts)]


def latencies(searches: dict, queries: np.ndarray) -> dict[str, tuple[list[np.ndarray], dict]]:
    """Time each search function on every query; they take turns query by query, so that a
    busy machine slows them alike. {name: (results, {"p50_ms", "p99_ms"})}."""
    results = {name: [] for name in searches}
    times = {name: [] for name in searches}
    for query in queries:
        for name, search in searches.items():
            start = time.perf_counter()
            results[name].append(search(query))
            times[name].append(time.perf_counter() - start)
    out = {}
    for name in searches:
        ms = np.array(times[name]) * 1000
        out[name] = results[name], {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}
    return out


def recall(found: list[np.ndarray], exact: list[np.ndarray]) -> float:
    """Mean share of the exact top K that a search found."""
    return round(float(np.mean([len(set(f.tolist()) & set(e.tolist())) / K for f, e in zip(found, exact)])), 4)


def bench(n: int, n_queries: int) -> dict:
    import faiss

    log(f"n={n:,}: generating vectors...")
    vectors, queries = synthetic(n, n_queries)
    row = {"chunks": n}

    log("  store build (SQLite + vector file)...")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        index = Index.create(Path(folder) / "idx", PrecomputedEmbedder(vectors), max_tokens=64, overlap=0)
        index.upsert([Document(f"/synthetic/{i}.txt", f"chunk {i} about topic {i // CHUNKS_PER_TOPIC}", "text") for i in range(n)])
        row["store_build_s"] = round(time.perf_counter() - start, 2)
        stored = index.vectors  # memory-mapped, as a search sees it

        log(f"  {row['store_build_s']}s; approximate index build...")
        start = time.perf_counter()
        approximate = ApproximateIndex.build(stored)
        build_s = time.perf_counter() - start
        approximate.save(Path(folder) / "approximate.faiss")
        chosen = plan(n)
        row["approximate"] = {"kind": chosen.kind, "n_lists": chosen.n_lists, "n_probe": approximate.n_probe,
                              "build_s": round(build_s, 2),
                              "index_mb": round((Path(folder) / "approximate.faiss").stat().st_size / 1e6, 1)}

        log("  exact and approximate search...")
        flat = faiss.IndexFlatIP(DIM)
        flat.add(vectors)
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # single queries on one core, like our einsum
        timed = latencies({"groklm": lambda q: exact_search(stored, q, K)[1],
                           "faiss_flat": lambda q: flat.search(q[None, :], K)[1][0],
                           "approximate": lambda q: approximate.search(q[None, :], K)[1][0]}, queries)
        exact, row["exact_groklm"] = timed["groklm"]
        row["exact_faiss_flat"] = timed["faiss_flat"][1]
        row["exact_speed_vs_faiss_flat"] = round(row["exact_faiss_flat"]["p50_ms"] / row["exact_groklm"]["p50_ms"], 3)
        found, timing = timed["approximate"]
        row["approximate"].update(timing, recall_at_10=recall(found, exact),
                                  speedup=round(row["exact_faiss_flat"]["p50_ms"] / timing["p50_ms"], 1))
        approximate.index.nprobe = min(4 * approximate.n_probe, approximate.index.nlist)
        found, timing = latencies({"approximate": lambda q: approximate.search(q[None, :], K)[1][0]}, queries)["approximate"]
        row["approximate"]["n_probe_4x"] = {"n_probe": approximate.index.nprobe, **timing, "recall_at_10": recall(found, exact)}
        faiss.omp_set_num_threads(threads)
        flat.reset()  # free its copy of the vectors before the next size
        log(f"  {row}")
        index.db.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    import faiss

    rows = [bench(int(n), args.queries) for n in args.sizes.split(",")]
    print(json.dumps({
        "benchmark": "retrieve",
        "dim": DIM,
        "k": K,
        "queries": args.queries,
        "cpus": os.cpu_count(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "data": f"synthetic unit vectors, one topic centre per {CHUNKS_PER_TOPIC} chunks; queries are noisy copies of stored vectors",
        "ratio": rows[-1]["approximate"]["speedup"],
        "recall_at_10": rows[-1]["approximate"]["recall_at_10"],
        "sizes": rows,
    }))


if __name__ == "__main__":
    main()
