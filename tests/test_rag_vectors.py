"""Approximate vector search (vectors.py): the index kind chosen by size, its recall against
exact search, and its file: saved and loaded, or built again when it is of an older kind."""

import numpy as np
import pytest

from groklm.apps.rag.index import Index
from groklm.apps.rag.vectors import EXACT_BELOW, ApproximateIndex, exact_search, plan

from helpers.rag import HashEmbedder, doc

faiss = pytest.importorskip("faiss", reason="approximate search needs the optional faiss-cpu")


def clustered(n: int, dim: int = 64, per_topic: int = 100, seed: int = 0) -> np.ndarray:
    """Unit vectors scattered around one random centre per `per_topic` (as benchmarks/retrieve.py)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // per_topic), dim)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), n)] / np.sqrt(dim) + rng.standard_normal((n, dim)).astype(np.float32) * 0.1
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def test_the_kind_follows_the_collection_size():
    assert plan(EXACT_BELOW - 1).kind == "exact" and plan(EXACT_BELOW - 1).n_lists == 1
    small, large = plan(EXACT_BELOW), plan(1_000_000)
    assert small.kind == large.kind == "ivf-sq8"
    assert small.n_lists < large.n_lists == 8192  # more cells for more vectors
    assert small.n_probe <= small.n_lists and large.n_probe < large.n_lists


def test_a_small_collection_is_searched_exactly():
    vectors = clustered(500)
    approximate = ApproximateIndex.build(vectors)
    assert approximate.index.nlist == 1
    for query in vectors[:5]:
        scores, positions = approximate.search(query[None, :], 10)
        exact_scores, exact_positions = exact_search(vectors, query, 10)
        np.testing.assert_allclose(scores[0], exact_scores, atol=1e-5)
        assert set(positions[0]) == set(exact_positions)


def test_recall_against_exact_search_on_clustered_vectors():
    vectors = clustered(20_000)
    approximate = ApproximateIndex.build(vectors)
    assert approximate.index.nlist > 1
    rng = np.random.default_rng(1)
    queries = vectors[rng.integers(0, len(vectors), 50)]
    scores, positions = approximate.search(queries, 10)
    recall = np.mean([len(set(found) & set(exact_search(vectors, q, 10)[1])) / 10 for q, found in zip(queries, positions)])
    assert recall >= 0.9
    # The candidates are scored again on the float vectors: the scores are exact cosines.
    np.testing.assert_allclose(scores[0], vectors[positions[0]] @ queries[0], atol=1e-5)


def test_missing_results_are_position_minus_one():
    vectors = clustered(3)
    scores, positions = ApproximateIndex.build(vectors).search(vectors[:1], 5)
    assert positions[0, :3].tolist() != [-1] * 3 and positions[0, 3:].tolist() == [-1, -1]


def test_save_and_load_round_trip(tmp_path):
    vectors = clustered(EXACT_BELOW)
    built = ApproximateIndex.build(vectors)
    built.save(tmp_path / "approximate.faiss")
    loaded = ApproximateIndex.load(tmp_path / "approximate.faiss", vectors)
    assert loaded is not None and loaded.index.nlist == built.index.nlist and loaded.n_probe == built.n_probe
    for got, expected in zip(loaded.search(vectors[:5], 10), built.search(vectors[:5], 10)):
        np.testing.assert_array_equal(got, expected)
    # The file of another collection size is not this index.
    assert ApproximateIndex.load(tmp_path / "approximate.faiss", vectors[:-1]) is None


def test_an_index_file_of_an_older_kind_is_built_again(tmp_path):
    idx = Index.create(tmp_path / "idx", HashEmbedder(dim=32), max_tokens=40, overlap=5)
    idx.upsert([doc(f"/d/{i}.txt", f"words about topic {i}") for i in range(60)])
    # What earlier groklm wrote: IVF over the float vectors, one cell per 40 of them.
    older = faiss.IndexIVFFlat(faiss.IndexFlatIP(32), 32, 2, faiss.METRIC_INNER_PRODUCT)
    older.train(np.ascontiguousarray(idx.vectors))
    older.add(np.ascontiguousarray(idx.vectors))
    file = idx.generation_dir / "approximate.faiss"
    faiss.write_index(older, str(file))
    assert ApproximateIndex.load(file, idx.vectors) is None
    assert idx.approximate.index.nlist == 1  # built again as `plan` now picks, and saved
    assert ApproximateIndex.load(file, idx.vectors) is not None
