"""Retrieval metrics on a hand-computed example, the queries file, and evaluate() end to end."""

import json

import pytest

from groklm.apps.rag.evaluate import (
    evaluate,
    ndcg_at_k,
    read_queries,
    recall_at_k,
    reciprocal_rank,
)
from groklm.apps.rag.index import Index
from groklm.errors import DataError

from helpers.rag import HashEmbedder, doc


def test_metrics_by_hand():
    ranking, relevant = ["a", "b", "x", "c", "y"], {"b", "c", "z"}
    assert recall_at_k(ranking, relevant, 1) == 0.0
    assert recall_at_k(ranking, relevant, 2) == pytest.approx(1 / 3)
    assert recall_at_k(ranking, relevant, 5) == pytest.approx(2 / 3)
    assert reciprocal_rank(ranking, relevant) == 0.5  # first relevant at rank 2
    assert reciprocal_rank(["x"] * 10 + ["b"], relevant) == 0.0  # past rank 10 counts nothing
    # DCG = 1/log2(3) + 1/log2(5) = 1.0616063; ideal (3 relevant) = 1 + 1/log2(3) + 1/2 = 2.1309298
    assert ndcg_at_k(ranking, relevant) == pytest.approx(0.4981893, abs=1e-6)
    assert ndcg_at_k(["b", "c", "z"], relevant) == pytest.approx(1.0)


@pytest.fixture
def index(tmp_path):
    idx = Index.create(tmp_path / "idx", HashEmbedder(), max_tokens=40, overlap=5)
    idx.upsert([
        doc("/corpus/docs/cats.txt", "Cats purr softly and chase mice at night."),
        doc("/corpus/docs/dogs.txt", "Dogs bark loudly at the mailman every morning."),
        doc("/corpus/other/rockets.txt", "Rockets launch satellites into orbit around the earth."),
    ])
    return idx


def write_queries(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_evaluate_by_source_and_by_chunk(index, tmp_path):
    dogs_chunk = next(c.id for c in index.chunks_at(range(len(index))) if "Dogs" in c.text)
    queries = read_queries(write_queries(tmp_path / "q.jsonl", [
        {"query": "cats chase mice", "relevant": ["docs/cats.txt"]},
        {"query": "mailman bark", "relevant": [dogs_chunk]},
        {"query": "satellites orbit", "relevant": "rockets.txt"},
    ]), index)
    assert [q.by_source for q in queries] == [True, False, True]
    assert queries[0].relevant == {"/corpus/docs/cats.txt"}
    results = evaluate(index, queries, k=1)
    assert set(results) == {"dense", "bm25", "hybrid"}
    for metrics in results.values():  # every query's words point at exactly its document
        assert metrics == {"recall@1": 1.0, "mrr@10": 1.0, "ndcg@10": 1.0}


def test_evaluate_counts_misses(index, tmp_path):
    queries = read_queries(write_queries(tmp_path / "q.jsonl", [
        {"query": "cats purr", "relevant": ["dogs.txt"]},  # the right document comes second
    ]), index)
    results = evaluate(index, queries, k=1, modes=("dense",))
    assert results["dense"]["recall@1"] == 0.0 and results["dense"]["mrr@10"] == 0.5


def test_bad_queries_files(index, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_queries(tmp_path / "missing.jsonl", index)
    with pytest.raises(DataError, match="expected"):
        read_queries(write_queries(tmp_path / "a.jsonl", [{"question": "x"}]), index)
    # A relevant file that is not in the index is no error: it counts as a miss (test_hostile_files.py).
    assert read_queries(write_queries(tmp_path / "b.jsonl", [{"query": "x", "relevant": ["nope.txt"]}]), index)[0].absent == [
        "nope.txt"]
    index.upsert([doc("/corpus/other/cats.txt", "More about cats.")])
    with pytest.raises(DataError, match="matches 2"):  # ambiguous: name more of the path
        read_queries(write_queries(tmp_path / "c.jsonl", [{"query": "x", "relevant": ["cats.txt"]}]), index)
