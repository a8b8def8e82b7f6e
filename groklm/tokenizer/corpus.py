"""Reading training text: files, directories or strings, streamed in blocks.

`iter_texts(inputs)` turns whatever the caller passes into a stream of text blocks, so a
corpus larger than memory can be counted block by block.

What counts as what:
- an `os.PathLike` (e.g. `pathlib.Path`) is a file, or a directory read recursively in sorted
  order (hidden files and folders skipped);
- a `str` is *text*, never a path (a short one-line string that names an existing file gets a
  warning, since that is almost always a mistake); wrap paths in `pathlib.Path`;
- an iterable may mix both.

Non-UTF-8 bytes in a file: with `errors="strict"` (the default) reading stops with a
`DataError` naming the file and the byte offset; with `errors="replace"` each invalid sequence
becomes U+FFFD and a warning reports how many were replaced in which file. Never silent loss.
"""

from __future__ import annotations

import codecs
import os
import threading
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from groklm.errors import DataError

BLOCK_BYTES = 1 << 20  # files are read 1 MiB at a time


def _is_path(item) -> bool:
    return isinstance(item, os.PathLike)


def list_files(items: Iterable) -> list[Path]:
    """The files named by the path-like `items`, directories expanded (str items are ignored)."""
    files: list[Path] = []
    for item in items:
        if not _is_path(item):
            continue
        path = Path(item)
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files.extend(Path(root) / n for n in sorted(names) if not n.startswith("."))
        elif path.exists():
            files.append(path)
        else:
            raise DataError(f"input not found: {path} (check the path; directories are read recursively)")
    return files


def _iterable(obj) -> bool:
    try:
        iter(obj)
    except TypeError:
        return False
    return True


def total_bytes(inputs) -> int | None:
    """Size in bytes of all input files, or None when some input is not a file (for progress bars)."""
    if isinstance(inputs, (str, os.PathLike)):
        items = [inputs]
    elif isinstance(inputs, (list, tuple)):
        items = list(inputs)
    else:
        return None  # a generator: sizing it would consume it
    if any(not _is_path(item) for item in items):
        return None
    try:
        return sum(f.stat().st_size for f in list_files(items))
    except OSError:
        return None


def iter_texts(inputs, errors: str = "strict") -> Iterator[str]:
    """Yield the text of `inputs` in blocks (a block of a file ends at a line break when it can)."""
    if errors not in ("strict", "replace"):
        raise DataError(f"errors must be 'strict' or 'replace', not {errors!r}")
    if isinstance(inputs, (str, os.PathLike)):
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
        elif _is_path(item):
            for path in list_files([item]):
                yield from read_file_blocks(path, errors)
        elif isinstance(item, (bytes, bytearray)):
            raise DataError("training input contains bytes; decode them to str first (or pass a file path)")
        else:
            raise DataError(f"training input items must be str or path-like, not {type(item).__name__}")


# "replace", counting: U+FFFD for each invalid sequence, tallied per thread for the warning.
_COUNTING_REPLACE = "groklm-counting-replace"
_replaced = threading.local()


def _count_and_replace(error: UnicodeDecodeError):
    _replaced.count = getattr(_replaced, "count", 0) + 1
    return "\ufffd", error.end


codecs.register_error(_COUNTING_REPLACE, _count_and_replace)


def read_file_blocks(path: Path, errors: str = "strict") -> Iterator[str]:
    """Stream one UTF-8 file as text blocks; see the module docstring for invalid bytes."""
    replaced = 0
    decoder = codecs.getincrementaldecoder("utf-8")(errors=_COUNTING_REPLACE if errors == "replace" else "strict")
    offset = 0
    carry = ""
    try:
        with open(path, "rb") as f:
            while True:
                raw = f.read(BLOCK_BYTES)
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
