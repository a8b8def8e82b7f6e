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
  * approximate: FAISS IVF as groklm builds it (build time, p50/p99), and its recall@10
    against the exact top 10, at groklm's default n_probe and at 4x that (more cells
    searched: slower, higher recall).

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
from groklm.apps.rag.vectors import ApproximateIndex, exact_search  # noqa: E402

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
        log(f"  {row['store_build_s']}s; exact search...")
        flat = faiss.IndexFlatIP(DIM)
        flat.add(vectors)
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # single queries on one core, like our einsum
        timed = latencies({"groklm": lambda q: exact_search(stored, q, K)[1],
                           "faiss_flat": lambda q: flat.search(q[None, :], K)[1][0]}, queries)
        faiss.omp_set_num_threads(threads)
        flat.reset()  # free its copy of the vectors before the next index is built
        exact, row["exact_groklm"] = timed["groklm"]
        row["exact_faiss_flat"] = timed["faiss_flat"][1]
        row["exact_speed_vs_faiss_flat"] = round(row["exact_faiss_flat"]["p50_ms"] / row["exact_groklm"]["p50_ms"], 3)

        log("  approximate (FAISS IVF) build...")
        start = time.perf_counter()
        approximate = ApproximateIndex.build(stored)
        build_s = time.perf_counter() - start
        row["approximate"] = {"build_s": round(build_s, 2), "n_lists": approximate.index.nlist}
        faiss.omp_set_num_threads(1)
        default_probe = approximate.n_probe
        for label, n_probe in (("default", default_probe), ("4x", 4 * default_probe)):
            approximate.index.nprobe = min(n_probe, approximate.index.nlist)
            found, timing = latencies({"ivf": lambda q: approximate.search(q[None, :], K)[1][0]}, queries)["ivf"]
            recall = np.mean([len(set(f.tolist()) & set(e.tolist())) / K for f, e in zip(found, exact)])
            row["approximate"][f"n_probe_{label}"] = {
                "n_probe": approximate.index.nprobe, **timing, "recall_at_10_vs_exact": round(float(recall), 4),
                "speedup_vs_exact_p50": round(row["exact_groklm"]["p50_ms"] / timing["p50_ms"], 1),
            }
        faiss.omp_set_num_threads(threads)
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
        "sizes": rows,
    }))


if __name__ == "__main__":
    main()
