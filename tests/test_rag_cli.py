"""`groklm rag index | search | eval | ask | remove` end to end, with the real default embedder."""

import json

import httpx
import pytest

import groklm.apps.rag.embed as embed_module
from groklm.apps.backends import OpenAIBackend
from groklm.cli.main import main

from helpers.rag import ScriptedServer, write_pdf


@pytest.fixture(scope="module", autouse=True)
def load_the_model_once():
    """Each command loads the embedder; in one test process, load it once and reuse it."""
    original, cache = embed_module.load_embedder, {}

    def cached(spec, api_key=None, device="cpu"):
        if spec not in cache:
            cache[spec] = original(spec, api_key, device)
        return cache[spec]

    embed_module.load_embedder = cached
    yield
    embed_module.load_embedder = original


@pytest.fixture
def docs(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "install.md").write_text(
        "# Installing\n\nRun pip install groklm inside a virtual environment.\n\n"
        "# Troubleshooting\n\nIf the GPU is not found, check that CUDA drivers are installed.\n"
    )
    (root / "cooking.txt").write_text("Simmer the tomatoes with garlic and olive oil for twenty minutes.")
    (root / "travel.html").write_text("<h1>Lisbon</h1><p>Take tram 28 to see the old town and its hills.</p>")
    write_pdf(root / "manual.pdf", ["Chapter one covers the basics", "Error E42 means the fuel filter is clogged"])
    (root / "broken.pdf").write_bytes(b"not a pdf")
    return root


def run(capsys, *argv):
    main(list(argv))
    return capsys.readouterr()


def test_index_search_eval_remove(docs, tmp_path, capsys):
    index = str(tmp_path / "idx")
    out = run(capsys, "rag", "index", str(docs), "--out", index)
    assert "4 files" in out.out and "0 removed" in out.err + out.out
    assert "skipped" in out.err and "broken.pdf" in out.err

    out = run(capsys, "rag", "search", index, "how do I install it?", "--k", "2", "--json")
    hits = [json.loads(line) for line in out.out.splitlines()]
    assert len(hits) == 2 and hits[0]["source"].endswith("install.md")
    assert {"source", "chunk_id", "score", "similarity", "text", "metadata"} <= set(hits[0])

    out = run(capsys, "rag", "search", index, "E42", "--mode", "bm25", "--json")
    (hit,) = [json.loads(line) for line in out.out.splitlines()]
    assert hit["source"].endswith("manual.pdf") and hit["metadata"]["page"] == 2
    out = run(capsys, "rag", "search", index, "tram in Lisbon", "--mode", "dense", "--filter", "format=pdf")
    assert "manual.pdf" in out.out and "travel.html" not in out.out
    assert "travel.html" in run(capsys, "rag", "search", index, "tram in Lisbon").out.splitlines()[0]

    queries = tmp_path / "queries.jsonl"
    queries.write_text("\n".join(json.dumps(q) for q in [
        {"query": "tomato sauce recipe", "relevant": ["cooking.txt"]},
        {"query": "what does error E42 mean", "relevant": ["manual.pdf"]},
        {"query": "drivers for the graphics card", "relevant": ["install.md"]},
    ]))
    out = run(capsys, "rag", "eval", index, "--queries", str(queries), "--json")
    result = json.loads(out.out)
    assert result["queries"] == 3 and set(result) >= {"dense", "bm25", "hybrid"}
    assert result["dense"]["recall@10"] == 1.0 and 0 < result["bm25"]["mrr@10"] <= 1
    table = run(capsys, "rag", "eval", index, "--queries", str(queries)).out
    assert "recall@10" in table and "hybrid" in table

    (docs / "cooking.txt").write_text("Bake the bread at 220 degrees for forty minutes.")
    (docs / "travel.html").unlink()
    out = run(capsys, "rag", "index", str(docs), "--out", index, "--prune")
    assert "1 chunks added, 1 removed" in out.out and "pruned 1 files" in out.out

    out = run(capsys, "rag", "remove", index, str(docs / "manual.pdf"))
    assert "2 chunks removed" in out.out


def test_ask_with_citations(docs, tmp_path, capsys, monkeypatch):
    index = str(tmp_path / "idx")
    run(capsys, "rag", "index", str(docs / "manual.pdf"), str(docs / "install.md"), "--out", index)
    server = ScriptedServer("It means the fuel filter is clogged [1].")
    monkeypatch.setattr("groklm.apps.backends.load_backend",
                        lambda spec: OpenAIBackend("http://test/v1", model="m", api_key="k", transport=httpx.MockTransport(server)))
    out = run(capsys, "rag", "ask", index, "What does error E42 mean?", "--backend", "openai:http://test/v1#m", "--json")
    result = json.loads(out.out)
    assert result["found"] and result["cited"] == [1] and result["sources"][0]["page"] == 2
    out = run(capsys, "rag", "ask", index, "What is the capital of Mongolia?", "--backend", "openai:x#m", "--min-similarity", "0.5")
    assert out.out.strip() == "Not found in the documents." and len(server.requests) == 1


def test_errors_are_messages(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["rag", "search", str(tmp_path / "nothing"), "query"])
    assert exit_info.value.code == 1 and "not a groklm RAG index" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["rag", "index", str(tmp_path), "--out", str(tmp_path / "i"), "--embedder", "bogus"])
    assert "unknown embedder" in capsys.readouterr().err
