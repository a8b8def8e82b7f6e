"""Where training text comes from: files, directories, and two named corpora.

A SOURCE on the command line is one of
  - a file: one document;
  - a directory: every text file under it (recursively, sorted by path), one document each;
  - `pystdlib`: the running Python's standard-library .py files (minus its test suites).
    Real, varied text that every machine has, offline, in a deterministic order;
  - `shakespeare`: Tiny Shakespeare (about 1 MB). Read from --shakespeare-path or
    $GROKLM_SHAKESPEARE if given, else from the cache, else downloaded once into the cache.
    Every copy is checked against a known sha256, so a partial or wrong file is never used.

Sources yield `(name, text)` documents one at a time, so a corpus never has to fit in memory.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from groklm.errors import DataError
from groklm.rundir import atomic_path

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_FILE = "tinyshakespeare.txt"
NAMED_CORPORA = ("pystdlib", "shakespeare")
SKIPPED_NAMED = 3  # how many skipped files the warning names

# Parts of the standard library that are not ordinary source: test suites full of deliberately
# broken files, third-party packages installed next to it, and generated tables (codec maps in
# encodings/, the help text dump in pydoc_data/) that would teach a small model hex, not Python.
_STDLIB_SKIP = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "encodings", "pydoc_data"}


@dataclass
class Source:
    """One resolved SOURCE: what the user typed and the files it stands for."""

    spec: str
    files: list[Path]

    def describe(self) -> dict:
        return {"source": self.spec, "files": len(self.files), "bytes": sum(f.stat().st_size for f in self.files)}


def cache_dir() -> Path:
    """Downloads live in $GROKLM_CACHE, or ~/.cache/groklm."""
    return Path(os.environ.get("GROKLM_CACHE") or Path.home() / ".cache" / "groklm")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str, hint: str = "delete it and run again to download it afresh") -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise DataError(f"{path} has sha256 {actual}, expected {expected}: it is incomplete or not the expected file; {hint}")


def fetch(url: str, dest: Path, sha256: str) -> Path:
    """Download `url` to `dest` once, verified: the file only appears after its checksum matched."""
    if dest.is_file():
        check_sha256(dest, sha256)
        return dest
    try:
        with atomic_path(dest) as tmp:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            check_sha256(tmp, sha256, hint=f"the download from {url} was cut short or changed; nothing was kept")
    except OSError as error:  # URLError is an OSError
        raise DataError(
            f"could not download {url} ({error}). Download it by hand and pass --shakespeare-path "
            "FILE (or set $GROKLM_SHAKESPEARE)."
        ) from error
    return dest


def shakespeare_file(local_path: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The verified Tiny Shakespeare file: the local copy if given, else cache, else download."""
    local_path = local_path or os.environ.get("GROKLM_SHAKESPEARE")
    if local_path:
        path = Path(local_path)
        if not path.is_file():
            raise DataError(f"Tiny Shakespeare file {path} does not exist")
        check_sha256(path, SHAKESPEARE_SHA256, hint="to train on it anyway, pass it as a plain file SOURCE")
        return path
    cached = cache_dir() / SHAKESPEARE_FILE
    if not download and not cached.is_file():
        raise DataError(f"Tiny Shakespeare is not in the cache ({cached}) and downloading is off")
    return fetch(SHAKESPEARE_URL, cached, SHAKESPEARE_SHA256)


def pystdlib_files() -> list[Path]:
    """The standard library's .py files, sorted by relative path (the same order everywhere)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py") if not _STDLIB_SKIP & set(p.relative_to(root).parts)]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def directory_files(root: Path) -> list[Path]:
    """Every file under `root`, sorted, skipping hidden files and folders (.git and the like)."""
    files = [p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def resolve(spec: str, shakespeare_path: str | os.PathLike | None = None) -> Source:
    """Turn one SOURCE argument into the files it stands for."""
    if spec == "pystdlib":
        return Source(spec, pystdlib_files())
    if spec == "shakespeare":
        return Source(spec, [shakespeare_file(shakespeare_path)])
    path = Path(spec)
    if path.is_file():
        return Source(spec, [path])
    if path.is_dir():
        files = directory_files(path)
        if not files:
            raise DataError(f"directory {path} holds no files")
        return Source(spec, files)
    raise DataError(f"source {spec!r} is not a file, a directory, or one of {', '.join(NAMED_CORPORA)}")


def read_text(path: Path) -> str | None:
    """A file's text as UTF-8, or None for binary files (a NUL byte, or not valid UTF-8)."""
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def iter_documents(sources: list[Source]) -> Iterator[tuple[Path, str]]:
    """Yield (path, text) for every non-empty text file of every source, in order; one warning
    per source counts (and names a few of) the files skipped as not text."""
    for source in sources:
        skipped = []
        for path in source.files:
            text = read_text(path)
            if text is None:
                skipped.append(path)
            elif text:
                yield path, text
        if skipped:
            names = ", ".join(p.name for p in skipped[:SKIPPED_NAMED]) + (", ..." if len(skipped) > SKIPPED_NAMED else "")
            warnings.warn(f"{source.spec}: skipped {len(skipped)} of {len(source.files)} files that are not text "
                          f"(binary, or not valid UTF-8): {names}", stacklevel=2)
