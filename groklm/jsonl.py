"""JSON Lines: the one reader and the one writer of groklm's record files.

Every JSONL file groklm reads (chat data, preference pairs, RL prompts, eval cases, distillation
caches, metrics.jsonl) goes through `read_jsonl`, so all of them agree on what a file may hold:

    - one JSON value per line, split on "\\n" only: a record may hold U+2028 or a form feed
      inside a string (json.dumps(..., ensure_ascii=False) writes them raw), which
      `str.splitlines()` would cut in two;
    - blank lines are ignored;
    - a bad line (not UTF-8, not JSON, or refused by the caller's `parse`) is a DataError that
      names the file and the line; with skip_bad_lines=True bad lines are dropped instead, with
      one warning that counts them and lists the first few line numbers;
    - with stop_at_bad_line=True reading ends quietly at the first bad line: for a log that a
      crash may have cut short mid-line (metrics.jsonl), where nothing after the cut is trusted;
    - a file that does not exist, or holds no records, is a DataError (allow_empty=True returns
      [] for a file with no records instead).

`write_jsonl` writes atomically (a temporary file renamed into place), so an interrupted run
never leaves half a file. `appending_jsonl` is for a cache filled record by record (distillation's
teacher labels, rephrased chunks): each record is flushed as it is written, so a killed run
keeps every record before the one it was writing; read the cache back with skip_bad_lines=True.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from groklm.errors import DataError
from groklm.rundir import atomic_path

SHOWN_BAD_LINES = 5  # line numbers listed in the skipped-lines warning


def json_object(value: object) -> dict:
    """The default `parse`: any JSON object, nothing else."""
    if not isinstance(value, dict):
        raise DataError(f"expected a JSON object, got {type(value).__name__}")
    return value


def read_jsonl(
    path: str | os.PathLike,
    parse: Callable[[object], object] = json_object,
    skip_bad_lines: bool = False,
    stop_at_bad_line: bool = False,
    allow_empty: bool = False,
) -> list:
    """The records of a JSONL file, each the result of `parse` on one line's JSON value.

    `parse` checks and shapes a value; it raises DataError (without the file and line, which
    are added here) for a value it refuses."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    records: list = []
    bad: list[int] = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):  # binary lines end at b"\n" only
            try:
                line = _decode(raw)
                if line.strip():
                    records.append(parse(_json_value(line)))
            except DataError as error:
                if stop_at_bad_line:
                    break
                if not skip_bad_lines:
                    raise DataError(f"{path}, line {number}: {error}") from None
                bad.append(number)
    if bad:
        shown = ", ".join(map(str, bad[:SHOWN_BAD_LINES])) + (", ..." if len(bad) > SHOWN_BAD_LINES else "")
        warnings.warn(f"{path}: skipped {len(bad)} bad line{'s' if len(bad) != 1 else ''} (line {shown})", stacklevel=3)
    if not records and not allow_empty:
        raise DataError(f"{path} has no records" + (" (every line was bad)" if bad else " (empty file)"))
    return records


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"not UTF-8 text ({error.reason} at byte {error.start + 1} of the line)") from None


def _json_value(line: str) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"not valid JSON ({error.msg}, column {error.colno})") from None


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write one JSON object per line, atomically (a crash never leaves half a file). Returns the count."""
    count = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


@contextmanager
def appending_jsonl(path: str | os.PathLike) -> Iterator[Callable[[dict], None]]:
    """`with appending_jsonl(path) as append: append(record)`: each record is one line, flushed
    at once. A last line cut short by a killed run is ended first, so the next record starts
    a line of its own (the cut line stays one bad line that readers skip)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:
        if handle.tell() and _last_byte(path) != b"\n":
            handle.write(b"\n")

        def append(record: dict) -> None:
            handle.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
            handle.flush()

        yield append


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1)
