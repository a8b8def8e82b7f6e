"""Reading training text: files, directories or strings, streamed in blocks.

`iter_texts(inputs)` turns whatever the caller passes into a stream of text blocks, so a
corpus larger than memory can be counted block by block.

What counts as what:
- an `os.PathLike` (e.g. `pathlib.Path`) is a file, or a directory read recursively in sorted
  order (hidden files and folders skipped);
- a `FileGroup` is files chosen by a rule rather than named one by one (a named corpus such as
  `pystdlib`, which the CLI resolves the way `groklm data prepare` does); a directory is one too;
- a `str` is *text*, never a path (a short one-line string that names an existing file gets a
  warning, since that is almost always a mistake); wrap paths in `pathlib.Path`;
- an iterable may mix both.

Files that are not text inside a directory or a group (a NUL byte in the first 8 KiB:
compiled `.pyc`, images, archives; or, with `errors="strict"`, bytes that are not UTF-8) are
skipped, and one warning per group counts them and names a few: a source tree with its build
output still trains. A file named on its own is what the caller asked for, so it is never
skipped: a binary one is refused with a `DataError`. Non-UTF-8 bytes in a file: with
`errors="strict"` (the default) a named file stops reading with a `DataError` naming the file and
the byte offset; with `errors="replace"` each invalid sequence becomes U+FFFD and a warning
reports how many were replaced in which file. Never silent loss.
"""

from __future__ import annotations

import codecs
import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from groklm.errors import DataError

BLOCK_BYTES = 1 << 20  # files are read 1 MiB at a time
SNIFF_BYTES = 8192  # a NUL byte this early marks a binary file (the test git and grep use)
SKIPPED_NAMED = 3  # how many skipped files the warning names


@dataclass(frozen=True)
class FileGroup:
    """Files chosen by a rule rather than named one by one (a directory's files, a named corpus):
    those that are not text are skipped and counted (see the module docstring)."""

    name: str
    files: tuple[Path, ...]


def _is_path(item) -> bool:
    return isinstance(item, os.PathLike)


def directory_group(path: Path) -> FileGroup:
    """A directory's files, recursively, in sorted order, hidden files and folders left out."""
    files: list[Path] = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        # (not a pipe, a socket or a dangling link: only what reading can finish)
        files.extend(Path(root) / n for n in sorted(names) if not n.startswith(".") and (Path(root) / n).is_file())
    return FileGroup(str(path), tuple(files))


def _expand(item) -> Path | FileGroup:
    """A path-like item as the one file it names or the group a directory holds."""
    if isinstance(item, FileGroup):
        return item
    path = Path(item)
    if path.is_dir():
        return directory_group(path)
    if not path.exists():
        raise DataError(f"input not found: {path} (check the path; directories are read recursively)")
    return path


def _iterable(obj) -> bool:
    try:
        iter(obj)
    except TypeError:
        return False
    return True


def total_bytes(inputs) -> int | None:
    """Size in bytes of all input files that will be read, or None when some input is not a file
    (for progress bars). A group's binary files are left out: they are skipped."""
    if isinstance(inputs, (str, os.PathLike, FileGroup)):
        items = [inputs]
    elif isinstance(inputs, (list, tuple)):
        items = list(inputs)
    else:
        return None  # a generator: sizing it would consume it
    if any(not (_is_path(item) or isinstance(item, FileGroup)) for item in items):
        return None
    total = 0
    try:
        for item in items:
            expanded = _expand(item)
            if isinstance(expanded, FileGroup):
                total += sum(f.stat().st_size for f in expanded.files if _nul_offset(f) is None)
            else:
                total += expanded.stat().st_size
    except OSError:
        return None
    return total


def iter_texts(inputs, errors: str = "strict") -> Iterator[str]:
    """Yield the text of `inputs` in blocks (a block of a file ends at a line break when it can)."""
    if errors not in ("strict", "replace"):
        raise DataError(f"errors must be 'strict' or 'replace', not {errors!r}")
    if isinstance(inputs, (str, os.PathLike, FileGroup)):
        inputs = [inputs]
    elif not _iterable(inputs):
        raise DataError(
            f"training input must be a path, a string, or an iterable of them; got {type(inputs).__name__}"
        )
    for item in inputs:
        if isinstance(item, str):
            if item and len(item) < 4096 and "\n" not in item and os.path.exists(item):
                warnings.warn(
                    f"{item!r} is read as text, not as the file it names; pass pathlib.Path({item!r}) "
                    "to read the file",
                    stacklevel=3,
                )
            yield item
        elif _is_path(item) or isinstance(item, FileGroup):
            expanded = _expand(item)
            if isinstance(expanded, FileGroup):
                yield from _group_texts(expanded, errors)
            else:
                yield from read_file_blocks(expanded, errors)
        elif isinstance(item, (bytes, bytearray)):
            raise DataError("training input contains bytes; decode them to str first (or pass a file path)")
        else:
            raise DataError(f"training input items must be str or path-like, not {type(item).__name__}")


def _group_texts(group: FileGroup, errors: str) -> Iterator[str]:
    """The text of a group's text files; one warning counts (and names a few of) the others."""
    skipped: list[Path] = []
    binary = 0
    for path in group.files:
        if _nul_offset(path) is not None:
            skipped.append(path)
            binary += 1
        elif errors == "strict" and not _is_utf8(path):
            skipped.append(path)
        else:
            yield from read_file_blocks(path, errors)
    if skipped:
        kinds = [f"{binary} binary"] if binary else []
        if len(skipped) > binary:
            kinds.append(f"{len(skipped) - binary} not valid UTF-8 (to read those with U+FFFD: errors='replace', "
                         "or --errors replace)")
        names = ", ".join(p.name for p in skipped[:SKIPPED_NAMED]) + (", ..." if len(skipped) > SKIPPED_NAMED else "")
        warnings.warn(f"{group.name}: skipped {len(skipped)} of {len(group.files)} files that are not text: "
                      f"{', '.join(kinds)} ({names})", stacklevel=2)


def _nul_offset(path: Path) -> int | None:
    """Where the first NUL byte of the file's first SNIFF_BYTES is, if any (an unreadable file
    is left to read_file_blocks, which says why)."""
    try:
        with open(path, "rb") as f:
            offset = f.read(SNIFF_BYTES).find(b"\x00")
    except OSError:
        return None
    return None if offset < 0 else offset


def _is_utf8(path: Path) -> bool:
    """Is the whole file valid UTF-8? Read in blocks, so a big file never sits in memory."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(path, "rb") as f:
            while block := f.read(BLOCK_BYTES):
                decoder.decode(block)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    except OSError:
        return True  # read_file_blocks reports it
    return True


# "replace", counting: U+FFFD for each invalid sequence, tallied per thread for the warning.
_COUNTING_REPLACE = "groklm-counting-replace"
_replaced = threading.local()


def _count_and_replace(error: UnicodeDecodeError):
    _replaced.count = getattr(_replaced, "count", 0) + 1
    return "\ufffd", error.end


codecs.register_error(_COUNTING_REPLACE, _count_and_replace)


def read_file_blocks(path: Path, errors: str = "strict") -> Iterator[str]:
    """Stream one UTF-8 file as text blocks; see the module docstring for invalid bytes. A binary
    file (a NUL byte in its first SNIFF_BYTES) is a DataError. The file is opened once, so a pipe
    (`--input <(zcat corpus.gz)`) reads too."""
    replaced = 0
    decoder = codecs.getincrementaldecoder("utf-8")(errors=_COUNTING_REPLACE if errors == "replace" else "strict")
    offset = 0
    carry = ""
    try:
        with open(path, "rb") as f:
            while True:
                raw = f.read(BLOCK_BYTES)
                nul = raw.find(b"\x00", 0, max(SNIFF_BYTES - offset, 0))
                if nul >= 0:
                    raise DataError(f"{path} is a binary file (a NUL byte at offset {offset + nul}), not text; name "
                                    "text files, or a directory (whose binary files are skipped)")
                final = not raw
                pending = len(decoder.getstate()[0])  # bytes of a character cut by the last block
                before = getattr(_replaced, "count", 0)
                try:
                    text = decoder.decode(raw, final=final)
                except UnicodeDecodeError as e:
                    raise DataError(
                        f"{path}: not valid UTF-8 (bad byte 0x{e.object[e.start]:02x} at byte offset "
                        f"{offset - pending + e.start}); convert the file to UTF-8, or pass errors='replace' "
                        "(CLI: --errors replace) to substitute U+FFFD and report the count"
                    ) from None
                replaced += getattr(_replaced, "count", 0) - before
                offset += len(raw)
                text = carry + text
                if final:
                    if text:
                        yield text
                    break
                # End the block at the last line break so no pre-token is cut in two.
                cut = text.rfind("\n") + 1
                if cut == 0 and len(text) < 16 * BLOCK_BYTES:
                    carry = text
                    continue
                cut = cut or len(text)
                carry = text[cut:]
                if cut:
                    yield text[:cut]
    except IsADirectoryError:
        raise DataError(f"{path} is a directory; pass it as a path to read the files inside") from None
    except PermissionError:
        raise DataError(f"cannot read {path}: permission denied") from None
    except FileNotFoundError:
        raise DataError(f"input not found: {path}") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    if replaced:
        warnings.warn(f"{path}: {replaced} invalid UTF-8 sequence(s) replaced with U+FFFD", stacklevel=2)
