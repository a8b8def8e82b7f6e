"""Hostile or careless files and tool inputs outside the server get a GroklmError that says what
to do, never a traceback (issue 17, point 5, and the `rag eval` journey of point 6).

Each case names what a user (or a model calling a tool) did; the CLI cases assert the exit
status and the message as a user sees it.
"""

from __future__ import annotations

import json
import pickle
import re
import sqlite3

import numpy as np
import pytest
from pydantic import BaseModel

import groklm.apps.rag.embed as embed_module
import groklm.apps.rag.index as index_module
from groklm.apps import tracing
from groklm.apps.backends import Backend, Reply, Usage
from groklm.apps.rag import load as rag_load
from groklm.apps.rag.evaluate import evaluate, read_queries
from groklm.apps.rag.index import Index
from groklm.apps.rag.retrieve import search
from groklm.apps.structured import MAX_INPUT_CHARS, classify, extract
from groklm.apps.tools import Tool, calculator
from groklm.calculator import CalculatorError
from groklm.calculator import evaluate as calculate
from groklm.cli import rag as rag_cli
from groklm.cli.main import main
from groklm.errors import CheckpointError, DataError, GroklmError
from groklm.tasks.tool import calculate as task_calculate

from helpers.rag import HashEmbedder, doc

pytestmark = pytest.mark.usefixtures("traces")  # spans of the tool calls go to each test's own file


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `groklm ARGV`, as a user sees them."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def hash_embedder(monkeypatch):
    """The CLI's embedder is the test's HashEmbedder: these tests are about files, not models."""
    def load(spec, api_key=None, device="cpu"):
        return HashEmbedder()

    monkeypatch.setattr(embed_module, "load_embedder", load)
    monkeypatch.setattr(index_module, "load_embedder", load)


# ---- a damaged RAG index ------------------------------------------------------------------------


@pytest.fixture
def built_index(tmp_path):
    """A healthy index whose BM25 and FAISS files exist, and what it answers to a query."""
    index = Index.create(tmp_path / "idx", HashEmbedder(), max_tokens=40, overlap=5)
    index.upsert([doc("/d/cats.txt", "Cats purr when they are content."), doc("/d/dogs.txt", "Dogs bark at the mailman.")])
    answer = [hit.chunk.source for hit in search(index, "cats purr", k=2, mode="hybrid")]
    assert answer[0] == "/d/cats.txt"
    return index.path, index.generation_dir, answer


def set_meta(path, key, value):
    with sqlite3.connect(path / "index.sqlite") as db:
        db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))


class RunsCode:
    """Unpickling this would create `marker`: proof that a file's pickle was (not) run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def truncate(file, keep):
    file.write_bytes(file.read_bytes()[:keep])


DAMAGE = {
    "truncated vectors.npy": lambda path, gen: truncate(gen / "vectors.npy", len((gen / "vectors.npy").read_bytes()) - 64),
    "vectors.npy cut inside its header": lambda path, gen: truncate(gen / "vectors.npy", 40),
    "vectors.npy of raw pickle bytes": lambda path, gen: (gen / "vectors.npy").write_bytes(pickle.dumps(np.zeros((2, 256)))),
    "vectors.npy of another shape": lambda path, gen: np.save(gen / "vectors.npy", np.zeros((5, 256), np.float32)),
    "vectors.npy of another width": lambda path, gen: np.save(gen / "vectors.npy", np.zeros((2, 3), np.float32)),
    "vectors.npy of integers": lambda path, gen: np.save(gen / "vectors.npy", np.zeros((2, 256), np.int64)),
    "rowids.npy out of order": lambda path, gen: np.save(gen / "rowids.npy", np.array([2, 1], np.int64)),
    "meta JSON cut short": lambda path, gen: set_meta(path, "chunker", '{"max_tokens": 40, "ove'),
    "meta generation not a number": lambda path, gen: set_meta(path, "generation", '"one"'),
    "meta embedder not an object": lambda path, gen: set_meta(path, "embedder", "[256]"),
    "meta key deleted": lambda path, gen: sqlite3.connect(path / "index.sqlite").execute(
        "DELETE FROM meta WHERE key = 'embedder_spec'").connection.commit(),
    "chunk metadata not JSON": lambda path, gen: sqlite3.connect(path / "index.sqlite").execute(
        "UPDATE chunks SET metadata = '{bad'").connection.commit(),
    "chunk rows deleted": lambda path, gen: sqlite3.connect(path / "index.sqlite").execute(
        "DELETE FROM chunks").connection.commit(),
    "index.sqlite overwritten": lambda path, gen: (path / "index.sqlite").write_bytes(b"\x00garbage" * 512),
    "chunks table dropped": lambda path, gen: sqlite3.connect(path / "index.sqlite").execute(
        "DROP TABLE chunks").connection.commit(),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_index_is_refused_with_what_to_do(built_index, damage):
    path, gen, _ = built_index
    DAMAGE[damage](path, gen)
    with pytest.raises(CheckpointError) as error:
        search(Index.open(path, HashEmbedder()), "cats purr", k=2, mode="hybrid")
    assert "rebuild it" in str(error.value) and f"groklm rag index YOUR_FILES --out {path}" in str(error.value)


def test_a_pickled_vectors_file_is_never_unpickled(built_index, tmp_path, capsys, hash_embedder):
    path, gen, _ = built_index
    marker = tmp_path / "the pickle ran"
    np.save(gen / "vectors.npy", np.array([RunsCode(marker)], dtype=object), allow_pickle=True)
    code, _, err = run_cli(capsys, "rag", "search", str(path), "cats")  # the index names its embedder: test:hash
    assert code == 1 and "Traceback" not in err
    assert err.startswith(f"groklm: error: the RAG index {path} is damaged (vectors.npy cannot be read")
    assert not marker.exists()


def test_a_damaged_index_through_the_cli(built_index, capsys, hash_embedder):
    path, gen, _ = built_index
    truncate(gen / "vectors.npy", 100)
    code, _, err = run_cli(capsys, "rag", "search", str(path), "cats", "--mode", "dense")
    assert code == 1 and "is damaged (vectors.npy cannot be read" in err and "rebuild it" in err
    set_meta(path, "chunker", "{not json")
    code, _, err = run_cli(capsys, "rag", "eval", str(path), "--queries", str(path / "q.jsonl"))
    assert code == 1 and "the meta key 'chunker' is not valid JSON" in err and "Traceback" not in err


def test_damaged_keyword_and_approximate_files_are_rebuilt_not_fatal(built_index):
    """The BM25 folder and the FAISS file are derived from the chunks and vectors: rebuilt."""
    pytest.importorskip("faiss")
    path, gen, answer = built_index
    Index.open(path, HashEmbedder()).approximate  # noqa: B018 (written on first use)
    (gen / "bm25" / "params.index.json").write_text("{cut sho")
    (gen / "bm25" / "data.csc.index.npy").write_bytes(pickle.dumps([1, 2]))
    (gen / "approximate.faiss").write_bytes(b"not faiss")
    index = Index.open(path, HashEmbedder())
    assert [hit.chunk.source for hit in search(index, "cats purr", k=2, mode="hybrid")] == answer
    assert [hit.chunk.source for hit in search(index, "cats purr", k=2, mode="dense", approximate=True)] == answer
    # Written back whole, with no staging folder left: the next reader loads them as they are.
    assert json.loads((gen / "bm25" / "params.index.json").read_text())["num_docs"] == 2
    assert sorted(p.name for p in gen.iterdir()) == ["approximate.faiss", "bm25", "rowids.npy", "vectors.npy"]
    again = Index.open(path, HashEmbedder())
    assert [hit.chunk.source for hit in search(again, "cats purr", k=2, mode="bm25")] == ["/d/cats.txt"]  # words only
    assert again.approximate.index.ntotal == 2


# ---- `groklm traces` on a file that is not a trace file -----------------------------------------------


def test_traces_on_a_file_that_is_not_sqlite(tmp_path, capsys):
    garbage = tmp_path / "notes.sqlite"
    garbage.write_bytes(b"these are my notes, not a database\n" * 100)
    for argv in (["traces", "--db", str(garbage)], ["traces", "--db", str(garbage), "--show", "abc"]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 1 and "Traceback" not in err
        assert f"{garbage} is not a usable groklm trace file (file is not a database)" in err
        assert "groklm traces --db PATH" in err
    assert garbage.read_bytes() == b"these are my notes, not a database\n" * 100


def test_traces_on_another_programs_database_leave_it_untouched(tmp_path, capsys):
    other = tmp_path / "app.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE users (id INTEGER, name TEXT)")
    before = other.read_bytes()
    code, _, err = run_cli(capsys, "traces", "--db", str(other))
    assert code == 1 and "an SQLite database with other tables: users" in err
    assert other.read_bytes() == before  # no spans table added, journal mode unchanged


def test_recording_into_a_broken_trace_file_warns_once_and_the_work_goes_on(tmp_path, monkeypatch):
    broken = tmp_path / "traces.sqlite"
    broken.write_bytes(b"not a database" * 100)
    monkeypatch.setattr(tracing, "_tracer", tracing.Tracer(broken))
    with pytest.warns(UserWarning, match="traces are not recorded from now on: .* is not a usable groklm trace file") as caught:
        for _ in range(3):
            assert Tool(calculator).call({"expression": "6*7"}).content == "42"
    assert len(caught) == 1


# ---- `groklm eval` / `groklm evals` on a binary file ------------------------------------------------


def test_eval_on_a_binary_file_says_it_wants_a_run_directory(tmp_path, capsys):
    model = tmp_path / "model.gguf"
    model.write_bytes(bytes(range(256)) * 64)
    code, _, err = run_cli(capsys, "eval", str(model))
    assert code == 1 and "Traceback" not in err
    assert f"{model} is a file, not a run directory" in err and f"groklm import {model} --out RUN" in err
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_bytes(bytes(range(256)))
    code, _, err = run_cli(capsys, "eval", str(run))
    assert code == 1 and "config.json is corrupt" in err


def test_evals_on_a_binary_data_file_fails_before_loading_a_model(tmp_path, capsys):
    data = tmp_path / "cases.jsonl"
    data.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    # The backend does not exist: the data file is judged first, so that is not what is reported.
    code, _, err = run_cli(capsys, "evals", str(data), "--backend", f"local:{tmp_path / 'no-run'}")
    assert code == 1 and f"{data}, line 1: not UTF-8 text" in err


# ---- the calculator tool -------------------------------------------------------------------------


@pytest.mark.parametrize(("expression", "says"), [
    ("-" * 10**6, "1000000 characters long, more than the 1000 allowed"),  # was a MemoryError in the parser
    ("-" * 999 + "1", "nested more than 100 levels deep"),
    ("(-1) ** 0.5", "not a real number"),  # Python's answer is a complex number
    ("(-8) ** (1 / 3)", "not a real number"),
    ("1e400", "out of range"),  # the literal is inf
    ("1e99 * 1e99", "more than 100 digits"),  # a float, limited like an integer
    ("1e99 ** 64", "out of range"),  # a float OverflowError
    ("10 ** 60 * 10 ** 60", "more than 100 digits"),
    ("2 ** 65", "exponent 65 is too large (at most 64)"),
    ("2 ** 64.5", "too large"),
])
def test_calculator_limits_and_real_results(expression, says):
    with pytest.raises(CalculatorError, match=re.escape(says)) as error:
        calculate(expression)
    assert isinstance(error.value, GroklmError) and isinstance(error.value, ValueError)
    result = Tool(calculator).call({"expression": expression})  # what a model sees
    assert not result.ok and says in result.content
    assert task_calculate(expression) == "error"  # the tool task's verifier, on the same evaluator


def test_calculator_limits_are_keywords_that_raise_them():
    assert calculate("1+" * 600 + "1", max_chars=2000, max_depth=700) == 601
    assert calculate("2 ** 100", max_exponent=100, max_digits=40) == 2**100
    assert calculate("1e150 * 10", max_digits=200) == pytest.approx(1e151)
    with pytest.raises(CalculatorError, match="out of range"):  # past what a float holds, whatever the limit
        calculate("1e300 * 1e300", max_digits=400)
    assert calculator("2 ** 64") == str(2**64) and calculator("-(-3) ** 2") == "-9"


# ---- a 50 MB document ----------------------------------------------------------------------------


def test_rag_index_skips_a_huge_file_and_the_flag_raises_the_limit(tmp_path, capsys, hash_embedder):
    assert rag_cli.MAX_FILE_MB == rag_load.MAX_FILE_MB  # the CLI's default is the library's
    huge = tmp_path / "dump.txt"
    with open(huge, "wb") as handle:
        handle.truncate(50_000_000)  # sparse: 50 MB by its size, nothing written; never read
    index = tmp_path / "idx"
    code, _, err = run_cli(capsys, "rag", "index", str(huge), "--out", str(index))
    assert code == 1
    assert f"skipped {huge}: 50.0 MB is more than the 10 MB limit for one file; pass --max-file-mb 50" in err
    assert "nothing to index: every file was skipped" in err and not index.exists()

    notes = tmp_path / "notes.txt"
    notes.write_text("Cats purr when they are content. " * 100)  # 3.3 kB
    code, _, err = run_cli(capsys, "rag", "index", str(notes), "--out", str(index), "--max-file-mb", "0.003")
    assert code == 1 and "3.3 kB" not in err and f"skipped {notes}: 0.0 MB is more than the 0.003 MB limit" in err
    code, out, err = run_cli(capsys, "rag", "index", str(notes), str(huge), "--out", str(index), "--max-file-mb", "0.01")
    assert code == 0 and out.startswith(f"{index}: 1 files") and f"skipped {huge}" in err
    assert "reading" in err and "chunking" in err  # progress for the long parts (and "embedding")
    code, _, err = run_cli(capsys, "rag", "index", str(notes), "--out", str(index), "--max-file-mb", "0")
    assert code == 1 and "--max-file-mb must be > 0" in err


class Recording(Backend):
    """A backend that answers one JSON object and counts the calls it gets."""

    kind, provider, capabilities = "recording", "test", frozenset()

    def __init__(self):
        super().__init__("recording")
        self.calls = 0

    def _chat(self, messages, opts):
        self.calls += 1
        return Reply('{"name": "Maria"}', "stop", Usage(10, 5), self.model)

    def _stream(self, messages, opts):
        yield self._chat(messages, opts).text


class Person(BaseModel):
    name: str


def test_extract_and_classify_refuse_a_huge_document_before_sending_it():
    backend, document = Recording(), "x" * (MAX_INPUT_CHARS + 1)
    with pytest.raises(DataError, match=f"the input is {MAX_INPUT_CHARS + 1:,} characters, more than max_input_chars"):
        extract(backend, Person, document)
    with pytest.raises(DataError, match="Split the document"):
        classify(backend, document, ["spam", "ham"])
    assert backend.calls == 0
    assert extract(backend, Person, document, max_input_chars=MAX_INPUT_CHARS + 1).value == Person(name="Maria")


# ---- `groklm rag eval` when a relevant document is not in the index ----------------------------------


def test_rag_eval_counts_an_absent_document_as_a_miss(tmp_path, capsys, hash_embedder):
    corpus = tmp_path / "cranfield"
    corpus.mkdir()
    (corpus / "0001.txt").write_text("Cats purr softly and chase mice at night.")
    (corpus / "0002.txt").write_text("Rockets launch satellites into orbit.")
    (corpus / "0471.txt").write_text("")  # an empty document, as Cranfield has: never indexed
    index = tmp_path / "idx"
    code, _, err = run_cli(capsys, "rag", "index", str(corpus), "--out", str(index))
    assert code == 0 and "0471.txt: no text in the file" in err
    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"query": "cats purr mice", "relevant": ["0001.txt", "0471.txt"]}) + "\n"
                       + json.dumps({"query": "rockets orbit", "relevant": ["0002.txt"]}) + "\n")

    code, out, err = run_cli(capsys, "rag", "eval", str(index), "--queries", str(queries), "--k", "2", "--json")
    report = json.loads(out)
    assert code == 0 and report["queries"] == 2 and report["absent"] == 1
    # Query 1 finds one of its two documents (the other cannot be found); query 2 finds its one.
    assert report["bm25"]["recall@2"] == pytest.approx((0.5 + 1.0) / 2)
    code, out, err = run_cli(capsys, "rag", "eval", str(index), "--queries", str(queries))
    assert code == 0 and "note: 1 relevant document(s) are not in the index and count as misses: 0471.txt" in err

    opened = Index.open(index, HashEmbedder())
    parsed = read_queries(queries, opened)
    assert parsed[0].absent == ["0471.txt"] and parsed[1].absent == []
    assert evaluate(opened, parsed, k=2, modes=("dense",))["dense"]["recall@2"] == pytest.approx(0.75)


def test_rag_eval_with_no_relevant_document_indexed_still_reports(tmp_path):
    index = Index.create(tmp_path / "idx", HashEmbedder(), max_tokens=40, overlap=5)
    index.upsert([doc("/c/0001.txt", "Cats purr.")])
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"query": "cats", "relevant": ["gone.txt"]}) + "\n")
    results = evaluate(index, read_queries(queries, index), k=1)
    assert results["hybrid"] == {"recall@1": 0.0, "mrr@10": 0.0, "ndcg@10": 0.0}



# ---- more careless paths ---------------------------------------------------------------------------


def test_rag_index_into_a_file_and_from_a_device(tmp_path, capsys, hash_embedder):
    notes = tmp_path / "notes.txt"
    notes.write_text("Cats purr.")
    code, _, err = run_cli(capsys, "rag", "index", str(notes), "--out", str(notes))
    assert code == 1 and f"{notes} is a file: an index is a folder" in err and notes.read_text() == "Cats purr."
    endless = tmp_path / "endless.txt"
    endless.symlink_to("/dev/zero")  # has no size and never ends: refused before it is read
    code, _, err = run_cli(capsys, "rag", "index", str(endless), "--out", str(tmp_path / "idx"))
    assert code == 1 and "skipped /dev/zero: not a regular file" in err and "nothing to index" in err
