"""Cleaning a corpus: documents in, the documents worth training on out, and an account of
what every rule removed.

What a document is:
  - a `.jsonl` file holds one document per record: its "text" string (records with an empty
    text are skipped; a record without a "text" string is a DataError naming the line);
  - any other text file is one document, or with split_paragraphs one document per
    paragraph (text separated by blank lines).
The same reading serves `groklm data clean` and `groklm data prepare`, so `data prepare
OUT/clean.jsonl` trains on exactly the texts `data clean` kept.

Each document goes through the enabled rules in this order, and the first that removes it
is the one it is counted under:
  1. boilerplate: site-furniture lines are cut out of the text; a document that is mostly
     boilerplate is dropped (quality.py);
  2. the heuristic quality rules (quality.py);
  3. exact_dup: the same text as an earlier kept document after normalising (Unicode NFKC,
     lower case, every run of whitespace one space): copies that differ only in case or layout;
  4. near_dup: a Jaccard similarity of at least the threshold with an earlier kept document,
     over the sets of word 5-grams ("shingles") of the normalised text. Five words is long
     enough that two unrelated texts share few shingles, short enough that a few edited words
     leave most shingles intact. Similarity is estimated by MinHash (NUM_PERM permutations)
     and candidates are found by LSH (datasketch); a candidate counts only if its estimated
     similarity reaches the threshold, so LSH's false positives are not dropped. Shingles are
     hashed with CRC-32 (a C call, several times faster than datasketch's default SHA-1;
     datasketch mixes the hash before permuting it, so a simple hash is enough).
The cheap per-document rules run first; deduplication runs on what they leave, so two
copies of a page that differ only in their footers count as one. Documents are compared
with the ones kept before them, so the first of a cluster of duplicates is the one kept.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import unicodedata
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from datasketch import MinHash, MinHashLSH
from tqdm import tqdm

from groklm.data.manifest import build_manifest, describe_sources, parse_licenses, write_manifest
from groklm.data.quality import QUALITY_RULES, failed_rule, strip_boilerplate
from groklm.data.sources import Source, iter_documents, resolve
from groklm.errors import ConfigError, DataError
from groklm.jsonl import read_jsonl, write_jsonl

RULES = ("boilerplate", *QUALITY_RULES, "exact_dup", "near_dup")
NUM_PERM = 128  # MinHash permutations: the similarity estimate's standard error is about 0.035 at 0.8
SHINGLE_WORDS = 5
# LSH's bands are tuned for recall: every candidate is checked against the threshold anyway, so
# a false candidate costs one comparison, a missed one a duplicate kept. With these weights a
# pair at similarity 0.8 is a candidate 87% of the time and one at 0.9 99.9% (datasketch's
# default, 0.5/0.5, finds 40% and 93%); a pair at 0.5, 3%.
LSH_WEIGHTS = (0.1, 0.9)  # (false positives, false negatives)
DEFAULT_NEAR_DUP_THRESHOLD = 0.8
DEFAULT_SAMPLES = 20  # removed documents kept per rule in removed/<rule>.jsonl, for inspection
CLEAN_FILE = "clean.jsonl"
REMOVED_DIR = "removed"
PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


@dataclass(frozen=True)
class CleanConfig:
    """Which rules run, and their settings."""

    rules: tuple[str, ...] = RULES
    near_dup_threshold: float = DEFAULT_NEAR_DUP_THRESHOLD
    samples: int = DEFAULT_SAMPLES

    def __post_init__(self):
        unknown = sorted(set(self.rules) - set(RULES))
        if unknown:
            raise ConfigError(f"unknown cleaning rule(s) {', '.join(unknown)}; the rules are {', '.join(RULES)}")
        if not 0.0 < self.near_dup_threshold <= 1.0:
            raise ConfigError(f"--near-dup-threshold must be in (0, 1], got {self.near_dup_threshold}")
        if self.samples < 0:
            raise ConfigError(f"--samples must be at least 0, got {self.samples}")

    def to_dict(self) -> dict:
        return {"rules": list(self.rules), "near_dup_threshold": self.near_dup_threshold,
                "shingle_words": SHINGLE_WORDS, "num_perm": NUM_PERM}


def select_rules(only: str | None, without: list[str]) -> tuple[str, ...]:
    """The rules `--rules a,b` names (all when None) minus every `--no-rule NAME`, in pipeline order."""
    chosen = set(RULES) if only is None else {name.strip() for name in only.split(",") if name.strip()}
    unknown = sorted((chosen | set(without)) - set(RULES))
    if unknown:
        raise ConfigError(f"unknown cleaning rule(s) {', '.join(unknown)}; the rules are {', '.join(RULES)}")
    return tuple(rule for rule in RULES if rule in chosen and rule not in without)


@dataclass
class Document:
    source: str  # the SOURCE as the user typed it
    path: Path
    text: str


def read_documents(sources: list[Source], split_paragraphs: bool = False, progress: bool = False) -> Iterator[Document]:
    """Every document of every source, in order (see the module's docstring for what a document is)."""
    total = sum(f.stat().st_size for source in sources for f in source.files)
    with tqdm(total=total, unit="B", unit_scale=True, desc="reading", disable=not progress) as bar:
        for source in sources:
            for path, text in iter_documents([source]):
                if path.suffix == ".jsonl":
                    texts = [record["text"] for record in read_jsonl(path, parse=_text_record, allow_empty=True)]
                elif split_paragraphs:
                    texts = PARAGRAPH_BREAK.split(text)
                else:
                    texts = [text]
                for piece in texts:
                    if piece.strip():
                        yield Document(source.spec, path, piece)
                bar.update(path.stat().st_size)


def _text_record(value: object) -> dict:
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        raise DataError('expected a JSON object with a "text" string (one document per line)')
    return value


def normalise(text: str) -> str:
    """What two copies must share to be the same text: NFKC, lower case, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def shingles(normal: str) -> set[str]:
    """The word 5-grams of a normalised text (a text shorter than that is one shingle)."""
    words = normal.split(" ")
    return {" ".join(words[i : i + SHINGLE_WORDS]) for i in range(max(1, len(words) - SHINGLE_WORDS + 1))}


@dataclass
class Tally:
    """One source's account: documents and bytes (UTF-8) in and out, and what each rule removed."""

    documents_in: int = 0
    documents_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    removed: dict[str, dict[str, int]] = field(default_factory=dict)

    def remove(self, rule: str, nbytes: int, document: bool = True) -> None:
        counts = self.removed.setdefault(rule, {"documents": 0, "bytes": 0})
        counts["documents"] += int(document)
        counts["bytes"] += nbytes
        if rule == "boilerplate" and not document:
            counts["lines"] = counts.get("lines", 0) + 1

    def to_dict(self) -> dict:
        return {"documents_in": self.documents_in, "documents_out": self.documents_out, "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out, "removed": self.removed}


class Cleaner:
    """Streams documents through the enabled rules, keeping a Tally per source and a few
    samples of what each rule removed. With no config it removes nothing and only counts."""

    def __init__(self, config: CleanConfig | None = None):
        self.config = config
        self.rules = set(config.rules) if config is not None else set()
        self.tallies: dict[str, Tally] = {}
        self.samples: dict[str, list[dict]] = {}
        self._seen: set[bytes] = set()
        self._sketches: list[MinHash] = []
        if "near_dup" in self.rules:
            self._lsh = MinHashLSH(threshold=config.near_dup_threshold, num_perm=NUM_PERM, weights=LSH_WEIGHTS)
            self._empty = MinHash(num_perm=NUM_PERM, hashfunc=zlib.crc32)  # copies share its permutations

    def clean(self, documents: Iterable[Document]) -> Iterator[Document]:
        """The documents kept, text as kept (boilerplate lines cut out)."""
        for document in documents:
            tally = self.tallies.setdefault(document.source, Tally())
            tally.documents_in += 1
            tally.bytes_in += _size(document.text)
            text = self._keep(document, tally)
            if text is not None:
                tally.documents_out += 1
                tally.bytes_out += _size(text)
                yield Document(document.source, document.path, text)

    def _keep(self, document: Document, tally: Tally) -> str | None:
        """The document's text as kept, or None when a rule removed it (counted in `tally`)."""
        text = document.text
        if "boilerplate" in self.rules:
            text, lines, mostly = strip_boilerplate(text)
            if lines and not mostly:
                for line in lines:
                    tally.remove("boilerplate", _size(line) + 1, document=False)
                self._sample("boilerplate", document, lines=lines)
            if mostly:
                return self._drop("boilerplate", document, document.text, tally)
        rule = failed_rule(text, self.rules)
        if rule is not None:
            return self._drop(rule, document, text, tally)
        if not self.rules & {"exact_dup", "near_dup"}:
            return text
        normal = normalise(text)
        if "exact_dup" in self.rules:
            digest = hashlib.blake2b(normal.encode("utf-8"), digest_size=16).digest()
            if digest in self._seen:
                return self._drop("exact_dup", document, text, tally)
            self._seen.add(digest)
        if "near_dup" in self.rules and normal:
            sketch = self._sketch(normal)
            if any(self._sketches[key].jaccard(sketch) >= self.config.near_dup_threshold for key in self._lsh.query(sketch)):
                return self._drop("near_dup", document, text, tally)
            self._lsh.insert(len(self._sketches), sketch, check_duplication=False)
            self._sketches.append(sketch)
        return text

    def _sketch(self, normal: str) -> MinHash:
        sketch = self._empty.copy()
        sketch.update_batch([s.encode("utf-8") for s in shingles(normal)])
        return sketch

    def _drop(self, rule: str, document: Document, text: str, tally: Tally) -> None:
        # The bytes removed are the text as it reached the rule: boilerplate lines already cut
        # out were counted under boilerplate, so the rules' bytes add up to bytes_in - bytes_out.
        tally.remove(rule, _size(text) + (_size(document.text) - _size(text) if rule == "boilerplate" else 0))
        self._sample(rule, document, text=text)
        return None

    def _sample(self, rule: str, document: Document, **what) -> None:
        kept = self.samples.setdefault(rule, [])
        if len(kept) < (self.config.samples if self.config is not None else 0):
            kept.append({"source": document.source, "path": str(document.path), **what})

    def write_samples(self, out_dir: Path) -> None:
        """removed/<rule>.jsonl for every rule that removed something."""
        for rule, records in self.samples.items():
            write_jsonl(Path(out_dir) / REMOVED_DIR / f"{rule}.jsonl", records)

    def manifest(self, entries: list[dict], split_paragraphs: bool) -> dict:
        """The provenance manifest (data/manifest.py) of the sources `entries` describe, with this cleaner's counts."""
        cleaning = None if self.config is None else {**self.config.to_dict(), "split_paragraphs": split_paragraphs}
        tallies = {spec: tally.to_dict() for spec, tally in self.tallies.items()}
        return build_manifest(entries, tallies, self.totals().to_dict(), cleaning)

    def totals(self) -> Tally:
        total = Tally()
        for tally in self.tallies.values():
            for key in ("documents_in", "documents_out", "bytes_in", "bytes_out"):
                setattr(total, key, getattr(total, key) + getattr(tally, key))
            for rule, counts in tally.removed.items():
                into = total.removed.setdefault(rule, {})
                for key, value in counts.items():
                    into[key] = into.get(key, 0) + value
        return total


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def clean_corpus(specs: list[str], out_dir: str | os.PathLike, config: CleanConfig, licenses: list[str] | tuple[str, ...] = (),
                 split_paragraphs: bool = False, shakespeare_path: str | os.PathLike | None = None,
                 progress: bool = True) -> dict:
    """`groklm data clean`: OUT/clean.jsonl (one {"text", "source", "path"} per kept document),
    OUT/removed/<rule>.jsonl (samples) and OUT/manifest.json, all or nothing; returns the manifest."""
    if not specs:
        raise DataError("no SOURCE given: name files, directories, `pystdlib` or `shakespeare`")
    resolved = [resolve(spec, shakespeare_path) for spec in specs]
    licence_of = parse_licenses(list(licenses), specs)
    with staged_directory(out_dir) as staged:
        entries = describe_sources(resolved, licence_of)
        cleaner = Cleaner(config)
        kept = cleaner.clean(read_documents(resolved, split_paragraphs, progress))
        write_jsonl(staged / CLEAN_FILE, ({"text": d.text, "source": d.source, "path": str(d.path)} for d in kept))
        if not cleaner.tallies:
            raise DataError(f"no text found in {', '.join(specs)} (empty or binary files only)")
        cleaner.write_samples(staged)
        manifest = cleaner.manifest(entries, split_paragraphs)
        write_manifest(staged, manifest)
    return manifest


@contextmanager
def staged_directory(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh folder beside `out_dir` to write into, renamed to `out_dir` when the block
    ends well and deleted when it fails: bad input never leaves a half-written output. `out_dir`
    must not exist, or be empty."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not empty; choose another --out or delete it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield staged
        if out.is_dir():
            out.rmdir()
        os.replace(staged, out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
