"""The persistent index: chunks and metadata in SQLite, their vectors in a NumPy file.

    INDEX/
      index.sqlite           meta (embedder, chunker, generation) + chunks (id, source, text, metadata)
      gen-000007/            the files of the current generation:
        vectors.npy          (n, dim) float32 unit vectors, one row per chunk, in rowid order
        rowids.npy           (n,) the SQLite rowid of each row
        bm25/                the BM25 index (bm25s), built on first keyword search
        approximate.faiss    the approximate-search index, built when first asked for

Every write (add, update, delete) makes a new generation: it writes the new vector files
into a fresh gen-* folder, then commits the chunk rows and the new generation number in one
SQLite transaction. A crash at any point leaves the previous generation whole; folders of
other generations are swept at the next write. Readers memory-map the vectors, so opening
even a large index is instant. Writers take SQLite's write lock, and one that finds the index
changed since it opened it stops with an error rather than overwrite the other's work.

A damaged index (a truncated or foreign vector file, a meta value that is not the JSON this
module wrote, chunks and vectors that disagree) is refused with a CheckpointError that says
to rebuild it; arrays are never unpickled. The BM25 and FAISS files are derived from the
chunks and vectors, so when they are damaged they are rebuilt instead.

An index remembers the embedder it was built with (its `identity`): vectors from different
models live in different spaces, so opening an index with another embedder is an error.
Updates are incremental: a file's chunks are compared by id, and only new ones are embedded.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sqlite3
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import bm25s
import numpy as np
from tqdm import tqdm

from groklm.apps.rag.chunk import Chunk, Chunker
from groklm.apps.rag.embed import load_embedder
from groklm.apps.rag.load import Document
from groklm.apps.rag.vectors import ApproximateIndex
from groklm.errors import CheckpointError, ConfigError, DataError
from groklm.rundir import atomic_path

DB_FILE = "index.sqlite"
FORMAT = "groklm-rag-index"
VERSION = 1
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE chunks (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: vector rows stay in rowid order
    id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL                    -- JSON
);
CREATE INDEX chunks_by_source ON chunks (source);
"""
FILTER_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# What each meta value must be, checked whenever it is read: (test, what it should be).
META = {
    "format": (lambda v: isinstance(v, str), "a string"),
    "version": (_is_int, "an integer"),
    "embedder": (lambda v: isinstance(v, dict) and _is_int(v.get("dim")) and v["dim"] > 0, "an object with a dim"),
    "embedder_spec": (lambda v: isinstance(v, str), "a string"),
    "chunker": (lambda v: isinstance(v, dict) and _is_int(v.get("max_tokens")) and _is_int(v.get("overlap")),
                "an object with max_tokens and overlap"),
    "generation": (lambda v: _is_int(v) and v >= 0, "a whole number"),
}


def damaged(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"the RAG index {path} is damaged ({what}); rebuild it: delete the folder and run "
                           f"`groklm rag index YOUR_FILES --out {path}` again")


def meta_value(path: Path, key: str, text: str | None):
    """A meta value, parsed and checked (CheckpointError saying to rebuild when it is not)."""
    if text is None:
        raise damaged(path, f"the meta key {key!r} is missing")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise damaged(path, f"the meta key {key!r} is not valid JSON: {error}") from None
    test, expected = META[key]
    if not test(value):
        raise damaged(path, f"the meta key {key!r} is {text[:100]!r}, not {expected}")
    return value


@dataclass
class Changes:
    """What an upsert or delete did, in chunks (and the files it touched)."""

    added: int = 0
    removed: int = 0
    unchanged: int = 0
    sources: int = 0


class Index:
    def __init__(self, path: Path, db: sqlite3.Connection, embedder):
        self.path, self.db, self.embedder = path, db, embedder
        # A reader keeps the generation it opened: a writer in another process cannot change
        # what it sees halfway through a search.
        self.generation = self.meta("generation")
        settings = self.meta("chunker")
        self.chunker = Chunker(settings["max_tokens"], settings["overlap"], embedder.count_tokens)

    # ---- opening ----------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, embedder, max_tokens: int | None = None, overlap: int = 40) -> Index:
        """A new, empty index at `path` for vectors from `embedder`."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{path} is a file: an index is a folder, give a new folder's path")
        if (path / DB_FILE).exists():
            raise ConfigError(f"{path} already holds an index (open it to update it)")
        max_tokens = max_tokens or min(200, embedder.max_tokens)
        if max_tokens > embedder.max_tokens:
            raise ConfigError(f"chunks of {max_tokens} tokens are longer than the embedder reads ({embedder.max_tokens})")
        Chunker(max_tokens, overlap)  # check the settings before writing anything
        path.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path / DB_FILE, timeout=60)
        with db:
            db.executescript(SCHEMA)
            for key, value in {
                "format": FORMAT,
                "version": VERSION,
                "embedder": embedder.identity,
                "embedder_spec": embedder.spec,
                "chunker": {"max_tokens": max_tokens, "overlap": overlap},
                "generation": 0,
            }.items():
                db.execute("INSERT INTO meta VALUES (?, ?)", (key, json.dumps(value)))
            write_generation(path, 0, np.zeros((0, embedder.identity["dim"]), np.float32), np.zeros(0, np.int64))
        return cls(path, db, embedder)

    @classmethod
    def open(cls, path: str | Path, embedder=None, device: str = "cpu") -> Index:
        """An existing index. Without `embedder`, the one it was built with is loaded (on `device`)."""
        path = Path(path)
        if not (path / DB_FILE).is_file():
            raise CheckpointError(f"{path} is not a groklm RAG index (no {DB_FILE}); build one with `groklm rag index`")
        db = sqlite3.connect(path / DB_FILE, timeout=60)  # a writer holds the lock for seconds at most
        try:
            rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
            db.execute("SELECT rowid, id, source, text, metadata FROM chunks LIMIT 1").fetchall()
        except sqlite3.DatabaseError as error:
            raise damaged(path, f"{DB_FILE} cannot be read: {error}") from error
        meta = {key: meta_value(path, key, rows.get(key)) for key in META}
        if meta["format"] != FORMAT or meta["version"] > VERSION:
            raise CheckpointError(f"{path} was not written by this version of groklm's RAG index")
        if embedder is None:
            embedder = load_embedder(meta["embedder_spec"], device=device)
        built_with, given = meta["embedder"], embedder.identity
        if built_with != given:
            raise ConfigError(
                f"{path} was built with embedder {built_with}, but it is being opened with {given}: vectors of "
                "different models cannot be compared. Open it with the embedder it was built with, or rebuild it."
            )
        return cls(path, db, embedder)

    def meta(self, key: str):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return meta_value(self.path, key, row and row[0])

    # ---- the current generation's arrays ----------------------------------------------------

    @property
    def generation_dir(self) -> Path:
        return self.path / f"gen-{self.generation:06d}"

    @cached_property
    def vectors(self) -> np.ndarray:
        file, dim = self.generation_dir / "vectors.npy", self.embedder.identity["dim"]
        vectors = load_array(file, self.path)
        if vectors.dtype != np.float32 or vectors.shape != (len(self.rowids), dim):
            raise damaged(self.path, f"{file.name} holds {vectors.dtype} {vectors.shape}, where the index needs "
                          f"float32 ({len(self.rowids)}, {dim}): one row per chunk")
        return vectors

    @cached_property
    def rowids(self) -> np.ndarray:
        file = self.generation_dir / "rowids.npy"
        rowids = load_array(file, self.path)
        # Positions are found by binary search (positions_of), which needs increasing ids.
        if rowids.dtype != np.int64 or rowids.ndim != 1 or np.any(rowids[1:] <= rowids[:-1]):
            raise damaged(self.path, f"{file.name} is not the increasing int64 row ids it should be")
        return rowids

    def __len__(self) -> int:
        return len(self.rowids)

    def _forget_arrays(self) -> None:
        for name in ("vectors", "rowids", "_bm25", "approximate"):
            self.__dict__.pop(name, None)

    # ---- writing ----------------------------------------------------------------------------

    def upsert(self, documents: list[Document], progress: bool = False) -> Changes:
        """Add the documents' files, or bring them up to date: chunks that disappeared are
        removed, new ones embedded and added, unchanged ones kept (their metadata refreshed)."""
        chunks = self.chunker.chunk_all(tqdm(documents, desc="chunking", unit="doc", disable=not progress))
        sources = sorted({doc.source for doc in documents})
        existing = {
            chunk_id: rowid
            for source in sources
            for rowid, chunk_id in self.db.execute("SELECT rowid, id FROM chunks WHERE source = ?", (source,))
        }
        fresh = {chunk.id for chunk in chunks}
        removed = [rowid for chunk_id, rowid in existing.items() if chunk_id not in fresh]
        new = [chunk for chunk in chunks if chunk.id not in existing]
        kept = [chunk for chunk in chunks if chunk.id in existing]
        vectors = self.embedder.embed([chunk.text for chunk in new], progress=progress)
        self._commit(removed, new, vectors, refreshed=kept)
        return Changes(len(new), len(removed), len(kept), len(sources))

    def delete_sources(self, sources: list[str]) -> Changes:
        removed = [
            rowid for source in sources for (rowid,) in self.db.execute("SELECT rowid FROM chunks WHERE source = ?", (source,))
        ]
        self._commit(removed, [], np.zeros((0, self.vectors.shape[1]), np.float32))
        return Changes(removed=len(removed), sources=len(sources))

    def _commit(self, removed: list[int], new: list[Chunk], vectors: np.ndarray, refreshed: list[Chunk] = ()) -> None:
        if not removed and not new and not refreshed:
            return
        with self.db:  # one transaction: all of it happens, or none
            self.db.execute("BEGIN IMMEDIATE")  # the write lock: another writer waits here
            if self.meta("generation") != self.generation:
                raise CheckpointError(f"{self.path} was changed by another process during this update; run it again")
            keep = ~np.isin(self.rowids, np.asarray(removed, dtype=np.int64))
            self.db.executemany("DELETE FROM chunks WHERE rowid = ?", [(r,) for r in removed])
            self.db.executemany("UPDATE chunks SET metadata = ? WHERE id = ?", [(json.dumps(c.metadata), c.id) for c in refreshed])
            new_rowids = [
                self.db.execute(
                    "INSERT INTO chunks (id, source, text, metadata) VALUES (?, ?, ?, ?)",
                    (c.id, c.source, c.text, json.dumps(c.metadata)),
                ).lastrowid
                for c in new
            ]
            all_vectors = np.concatenate([self.vectors[keep], vectors.astype(np.float32)])
            all_rowids = np.concatenate([self.rowids[keep], np.asarray(new_rowids, dtype=np.int64)])
            write_generation(self.path, self.generation + 1, all_vectors, all_rowids)
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (json.dumps(self.generation + 1),))
        self.generation += 1
        self._forget_arrays()
        for old in self.path.glob("gen-*"):
            if old.name != self.generation_dir.name:
                shutil.rmtree(old, ignore_errors=True)

    # ---- reading ----------------------------------------------------------------------------

    def sources(self) -> list[str]:
        return [s for (s,) in self.db.execute("SELECT DISTINCT source FROM chunks ORDER BY source")]

    def chunks_at(self, positions: np.ndarray) -> list[Chunk]:
        """The chunks at these vector rows, in the same order."""
        rowids = [int(r) for r in self.rowids[positions]]
        rows = {}
        for start in range(0, len(rowids), 500):  # SQLite caps the number of ? in one query
            part = rowids[start : start + 500]
            query = f"SELECT rowid, id, source, text, metadata FROM chunks WHERE rowid IN ({','.join('?' * len(part))})"
            for rowid, chunk_id, source, text, metadata in self.db.execute(query, part):
                try:
                    rows[rowid] = Chunk(chunk_id, source, text, json.loads(metadata))
                except json.JSONDecodeError as error:
                    raise damaged(self.path, f"chunk {chunk_id} has metadata that is not valid JSON: {error}") from None
        missing = [r for r in rowids if r not in rows]
        if missing:
            raise damaged(self.path, f"vector rows point at {len(missing)} chunk(s) the database does not hold")
        return [rows[r] for r in rowids]

    def positions_of(self, chunk_ids: list[str]) -> np.ndarray:
        """Vector rows of the chunks with these ids (unknown ids are left out)."""
        rowids = [r for cid in chunk_ids for (r,) in self.db.execute("SELECT rowid FROM chunks WHERE id = ?", (cid,))]
        return np.searchsorted(self.rowids, np.asarray(rowids, dtype=np.int64))

    def filter_positions(self, filters: dict | None) -> np.ndarray | None:
        """Vector rows whose chunk matches every filter (None: no filters, every row).

        "source" is a glob on the file path ("*/docs/*.md"); any other key must equal the
        metadata value, or be one of its items when it is a list (headings: any level)."""
        if not filters:
            return None
        clauses, params = [], []
        for key, value in filters.items():
            if key == "source":
                clauses.append("source GLOB ?")
                params.append(str(value))
            elif FILTER_KEY.match(key):
                # json_each walks a list's items, or yields a scalar once: one test covers both.
                clauses.append("EXISTS (SELECT 1 FROM json_each(metadata, ?) WHERE value = ?)")
                params += [f"$.{key}", value]
            else:
                raise DataError(f"bad filter key {key!r}: use a metadata field name such as page or headings")
        query = f"SELECT rowid FROM chunks WHERE {' AND '.join(clauses)} ORDER BY rowid"
        rowids = np.asarray([r for (r,) in self.db.execute(query, params)], dtype=np.int64)
        return np.searchsorted(self.rowids, rowids)

    # ---- keyword and approximate indexes, built when first needed ---------------------------

    def bm25_scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk (vector-row order) for the query's words."""
        tokens = bm25s.tokenize([query], return_ids=False, stopwords="en", show_progress=False)[0]
        if not tokens or not len(self):
            return np.zeros(len(self), dtype=np.float32)
        return self._bm25.get_scores(tokens)

    @cached_property
    def _bm25(self):
        folder = self.generation_dir / "bm25"
        existed = folder.is_dir()
        if existed:
            try:
                retriever = bm25s.BM25.load(str(folder), allow_pickle=False, show_progress=False)
                if retriever.scores["num_docs"] == len(self):
                    return retriever
            except (ValueError, OSError, EOFError, KeyError, TypeError):
                pass  # damaged (or cut short by a crash): derived from the chunks, so built again below
        texts = [text for (text,) in self.db.execute("SELECT text FROM chunks ORDER BY rowid")]
        retriever = bm25s.BM25()
        retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
        # bm25s writes several files: build the folder aside and move it into place whole, so
        # a reader in another process never loads half of it.
        staging = folder.with_name(f".bm25-{os.getpid()}-{secrets.token_hex(4)}")  # unique to this writer
        try:
            staging.mkdir()  # (not mkdtemp: its folder would be private to this user)
        except OSError:
            return retriever  # a read-only index: searched from memory, built again next time
        try:
            retriever.save(str(staging), show_progress=False)
            if existed:  # it was damaged (never remove a sound one another process has just put in place)
                shutil.rmtree(folder, ignore_errors=True)
            os.rename(staging, folder)
        except OSError:
            pass  # another process put its own (equal) copy in place first
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return retriever

    @cached_property
    def approximate(self):
        """The FAISS IVF index over the vectors (built and saved the first time; built again
        when its file is damaged, does not match the vectors, or is of a kind or size that
        `vectors.plan` no longer picks)."""
        file = self.generation_dir / "approximate.faiss"
        if file.is_file():
            try:
                approximate = ApproximateIndex.load(file, self.vectors)
                if approximate is not None:
                    return approximate
            except RuntimeError:  # FAISS reports an unreadable file as a RuntimeError
                pass
        approximate = ApproximateIndex.build(self.vectors)
        with atomic_path(file) as tmp:
            approximate.save(tmp)
        return approximate


def write_generation(path: Path, generation: int, vectors: np.ndarray, rowids: np.ndarray) -> None:
    folder = path / f"gen-{generation:06d}"
    shutil.rmtree(folder, ignore_errors=True)  # a leftover of a write that crashed before its commit
    folder.mkdir(parents=True)
    for name, array in (("vectors.npy", vectors), ("rowids.npy", rowids)):
        with open(folder / name, "wb") as handle:
            np.save(handle, array)
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the commit that points at it


def load_array(file: Path, index_path: Path) -> np.ndarray:
    """A memory-mapped array of the index; never unpickled (a file from anyone could run code)."""
    if not file.is_file():
        raise CheckpointError(f"{file} is missing: another process updated the index since it was opened "
                              "(open it again), or the index is damaged (rebuild it)")
    try:
        array = np.load(file, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:  # truncated, not .npy, or pickled objects
        raise damaged(index_path, f"{file.name} cannot be read: {error}") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        raise damaged(index_path, f"{file.name} is not a single array")
    return np.asarray(array) if array.size == 0 else array
