"""The persistent index: add / update / delete by source, persistence, crash safety, the
embedder check, filters, BM25, approximate search and hybrid fusion.

Most tests use `HashEmbedder` (helpers/rag.py), a bag-of-words embedder that is fast and
fully predictable (its cosine is word overlap), so ranks can be reasoned about;
test_real_embedder_finds_paraphrase runs the real default model end to end."""

import bm25s
import numpy as np
import pytest

from groklm.apps.rag.index import Index
from groklm.apps.rag.retrieve import RRF_K, reciprocal_rank_fusion, search
from groklm.errors import CheckpointError, ConfigError, DataError

from helpers.rag import HashEmbedder, doc

DOCS = [
    doc("/d/animals.md", "# Cats\n\nCats purr and chase mice.\n\n# Dogs\n\nDogs bark at the mailman.", format="markdown"),
    doc("/d/space.txt", "The moon orbits the earth. Rockets carry astronauts to orbit."),
    doc("/d/manual.pdf", "Press the red button to start the engine.", format="pdf", page=1),
    doc("/d/manual.pdf", "Error E42 means the fuel filter is clogged.", format="pdf", page=2),
]


@pytest.fixture
def index(tmp_path):
    idx = Index.create(tmp_path / "idx", HashEmbedder(), max_tokens=40, overlap=5)
    idx.upsert(DOCS)
    return idx


def test_add_search_and_reopen(index, tmp_path):
    assert len(index) == 5 and index.sources() == ["/d/animals.md", "/d/manual.pdf", "/d/space.txt"]
    hits = search(index, "why do dogs bark", k=2, mode="dense")
    assert hits[0].chunk.source == "/d/animals.md" and hits[0].chunk.metadata["headings"] == ["Dogs"]
    assert hits[0].score == pytest.approx(hits[0].similarity)
    reopened = Index.open(tmp_path / "idx", HashEmbedder())
    assert [h.chunk.id for h in search(reopened, "why do dogs bark", k=2, mode="dense")] == [h.chunk.id for h in hits]


def test_update_embeds_only_changed_chunks_and_delete(index):
    embedder = index.embedder
    before = {h.chunk.id for h in search(index, "cats purr", k=10, mode="bm25")}
    embedder.calls.clear()
    edited = doc("/d/animals.md", "# Cats\n\nCats purr and chase mice.\n\n# Dogs\n\nDogs howl at the moon.", format="markdown")
    changes = index.upsert([edited])
    assert (changes.added, changes.removed, changes.unchanged) == (1, 1, 1)
    assert embedder.calls == [1]  # only the changed chunk was embedded
    assert len(index) == 5
    assert not search(index, "mailman", k=5, mode="bm25")  # the old text is gone from BM25 too
    assert search(index, "howl", k=1, mode="bm25")[0].chunk.source == "/d/animals.md"
    assert {h.chunk.id for h in search(index, "cats purr", k=10, mode="bm25")} & before

    unchanged = index.upsert([edited])
    assert (unchanged.added, unchanged.removed, unchanged.unchanged) == (0, 0, 2)

    removed = index.delete_sources(["/d/manual.pdf"])
    assert removed.removed == 2 and len(index) == 3
    assert "/d/manual.pdf" not in index.sources()
    assert all(h.chunk.source != "/d/manual.pdf" for h in search(index, "error fuel filter", k=5, mode="hybrid"))
    assert len(list(index.path.glob("gen-*"))) == 1  # older generations swept


def test_vectors_stay_aligned_with_chunks_after_deletes(index):
    index.delete_sources(["/d/space.txt"])
    index.upsert([doc("/d/new.txt", "Volcanoes erupt lava and ash.")])
    for position, chunk in enumerate(index.chunks_at(np.arange(len(index)))):
        np.testing.assert_allclose(index.vectors[position], index.embedder.embed([chunk.text])[0], atol=1e-6)


def test_failed_write_leaves_the_index_as_it_was(index, monkeypatch, tmp_path):
    import groklm.apps.rag.index as index_module

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(index_module, "write_generation", crash)
    with pytest.raises(OSError):
        index.upsert([doc("/d/more.txt", "Brand new text about volcanoes.")])
    monkeypatch.undo()
    reopened = Index.open(tmp_path / "idx", HashEmbedder())
    assert len(reopened) == 5 and "/d/more.txt" not in reopened.sources()


def test_a_second_writer_does_not_overwrite_the_first(index, tmp_path):
    other = Index.open(tmp_path / "idx", HashEmbedder())
    index.upsert([doc("/d/first.txt", "Written by the first process.")])
    with pytest.raises(CheckpointError, match="changed by another process"):
        other.upsert([doc("/d/second.txt", "Written by the second process.")])
    assert "/d/first.txt" in Index.open(tmp_path / "idx", HashEmbedder()).sources()
    assert "/d/second.txt" not in Index.open(tmp_path / "idx", HashEmbedder()).sources()


def test_other_embedder_is_a_clear_error(index, tmp_path):
    with pytest.raises(ConfigError, match="built with embedder"):
        Index.open(tmp_path / "idx", HashEmbedder(name="other"))
    with pytest.raises(ConfigError, match="already holds an index"):
        Index.create(tmp_path / "idx", HashEmbedder())
    with pytest.raises(CheckpointError, match="not a groklm RAG index"):
        Index.open(tmp_path / "nothing", HashEmbedder())
    with pytest.raises(ConfigError, match="longer than the embedder reads"):
        Index.create(tmp_path / "big", HashEmbedder(), max_tokens=4096)


def test_filters(index):
    def sources(**filters):
        return [(h.chunk.source, h.chunk.metadata.get("page")) for h in search(index, "the", k=10, mode="dense", filters=filters)]

    assert sources(page=2) == [("/d/manual.pdf", 2)]
    assert {s for s, _ in sources(format="pdf")} == {"/d/manual.pdf"} and len(sources(format="pdf")) == 2
    assert {s for s, _ in sources(source="*.md")} == {"/d/animals.md"}
    assert len(sources(headings="Cats")) == 1  # matches any level of the heading path
    assert sources(page=7) == []
    bm25_hits = search(index, "engine button fuel", k=10, mode="bm25", filters={"page": 2})
    assert [h.chunk.metadata["page"] for h in bm25_hits] == [2]
    with pytest.raises(DataError, match="bad filter key"):
        search(index, "x", filters={"page; DROP TABLE chunks": 1})


def test_bm25_scores_match_bm25s(index):
    texts = [c.text for c in index.chunks_at(np.arange(len(index)))]
    reference = bm25s.BM25()
    reference.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    query = "fuel filter error"
    expected = reference.get_scores(bm25s.tokenize([query], return_ids=False, stopwords="en", show_progress=False)[0])
    np.testing.assert_allclose(index.bm25_scores(query), expected, rtol=1e-6)
    hits = search(index, "E42", k=3, mode="bm25")
    assert len(hits) == 1 and "E42" in hits[0].chunk.text  # no shared word, no hit


def test_reciprocal_rank_fusion_by_hand():
    positions, scores = reciprocal_rank_fusion([np.array([7, 3, 5]), np.array([3, 9])], k=4)
    assert positions.tolist() == [3, 7, 9, 5]
    assert scores[0] == pytest.approx(1 / (RRF_K + 2) + 1 / (RRF_K + 1))
    assert scores[1] == pytest.approx(1 / (RRF_K + 1)) and scores[3] == pytest.approx(1 / (RRF_K + 3))


def test_hybrid_combines_both_rankings(index):
    query = "Error E42 rockets"
    dense = [h.chunk.id for h in search(index, query, k=5, mode="dense")]
    keyword = [h.chunk.id for h in search(index, query, k=5, mode="bm25")]
    hybrid = search(index, query, k=5, mode="hybrid")
    expected = {}
    for ranking in (dense, keyword):
        for rank, chunk_id in enumerate(ranking, start=1):
            expected[chunk_id] = expected.get(chunk_id, 0) + 1 / (RRF_K + rank)
    for hit in hybrid:
        assert hit.score == pytest.approx(expected[hit.chunk.id])
    assert [h.score for h in hybrid] == sorted((h.score for h in hybrid), reverse=True)
    with pytest.raises(ConfigError, match="unknown search mode"):
        search(index, query, mode="fuzzy")


def test_approximate_search_matches_exact_when_probing_every_list(tmp_path):
    pytest.importorskip("faiss", reason="approximate search needs the optional faiss-cpu")
    rng = np.random.default_rng(0)
    idx = Index.create(tmp_path / "ann", HashEmbedder(dim=64), max_tokens=40, overlap=5)
    words = [f"w{i}" for i in range(300)]
    idx.upsert([doc(f"/d/{i}.txt", " ".join(rng.choice(words, 6))) for i in range(400)])
    approximate = idx.approximate
    approximate.index.nprobe = approximate.index.nlist  # probing every cell is exhaustive
    for query in ("w1 w2 w3", "w10 w200", "w299"):
        exact = search(idx, query, k=5, mode="dense")
        approx = search(idx, query, k=5, mode="dense", approximate=True)
        # Equal scores (bag-of-words vectors tie often, and ties may come in any order).
        np.testing.assert_allclose([h.score for h in approx], [h.score for h in exact], atol=1e-5)
        assert all(h.score == pytest.approx(h.similarity, abs=1e-5) for h in approx)
    assert (idx.generation_dir / "approximate.faiss").is_file()


def test_real_embedder_finds_paraphrase(tmp_path):
    from groklm.apps.rag.embed import Embedder

    idx = Index.create(tmp_path / "real", Embedder.default())
    idx.upsert([doc("/d/a.txt", "The automobile would not start because its battery was flat."),
                doc("/d/b.txt", "Bananas are rich in potassium and easy to digest."),
                doc("/d/c.txt", "The parliament passed a new tax law on Tuesday.")])
    hits = search(idx, "my car's battery died", k=3, mode="dense")
    assert hits[0].chunk.source == "/d/a.txt" and hits[0].similarity > hits[1].similarity + 0.1
