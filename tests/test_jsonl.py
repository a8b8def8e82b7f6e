"""groklm.jsonl, the one JSONL reader: line numbers in errors, bad UTF-8, blank lines,
skip_bad_lines, stop_at_bad_line, and the atomic writer."""

import json

import pytest

from groklm.errors import DataError
from groklm.jsonl import read_jsonl, write_jsonl


def write(path, text: str | bytes):
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def test_reads_objects_and_skips_blank_lines(tmp_path):
    path = write(tmp_path / "r.jsonl", '{"a": 1}\n\n   \n{"b": [2]}\r\n{"c": "no newline at the end"}')
    assert read_jsonl(path) == [{"a": 1}, {"b": [2]}, {"c": "no newline at the end"}]


def test_records_may_hold_line_separators_inside_strings(tmp_path):
    """json.dumps(ensure_ascii=False) writes U+2028 and form feeds raw; str.splitlines() would cut there."""
    records = [{"text": "one\u2028two\x0cthree\x85four"}, {"text": "café"}]
    path = tmp_path / "r.jsonl"
    assert write_jsonl(path, records) == 2
    assert read_jsonl(path) == records


@pytest.mark.parametrize("line, why", [
    ("{not json", r"not valid JSON \(.*column 2\)"),
    ("[1, 2]", "expected a JSON object, got list"),
    ("7", "expected a JSON object, got int"),
    ('"text"', "expected a JSON object, got str"),
])
def test_a_bad_line_names_the_file_the_line_and_the_problem(tmp_path, line, why):
    path = write(tmp_path / "r.jsonl", '{"a": 1}\n\n' + line + '\n{"b": 2}\n')
    with pytest.raises(DataError, match=rf"r\.jsonl, line 3: {why}"):
        read_jsonl(path)


def test_bad_utf8_is_reported_with_its_line(tmp_path):
    path = write(tmp_path / "latin1.jsonl", b'{"a": 1}\n{"city": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin1\.jsonl, line 2: not UTF-8 text \(invalid continuation byte at byte 14"):
        read_jsonl(path)
    with pytest.warns(UserWarning, match=r"skipped 1 bad line \(line 2\)"):
        assert read_jsonl(path, skip_bad_lines=True) == [{"a": 1}]


def test_parse_shapes_records_and_its_errors_get_the_line(tmp_path):
    def parse(value):
        if not isinstance(value, dict) or "x" not in value:
            raise DataError('expected {"x": ...}')
        return value["x"]

    path = write(tmp_path / "r.jsonl", '{"x": 1}\n{"x": [2]}\n{"y": 3}\n')
    with pytest.raises(DataError, match=r'line 3: expected \{"x": \.\.\.\}'):
        read_jsonl(path, parse)
    with pytest.warns(UserWarning, match="skipped 1 bad line"):
        assert read_jsonl(path, parse, skip_bad_lines=True) == [1, [2]]


def test_skip_bad_lines_warns_once_with_the_count_and_first_lines(tmp_path):
    lines = ['{"ok": 0}'] + ["{bad"] * 7 + ['{"ok": 1}']
    path = write(tmp_path / "r.jsonl", "\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match=r"r\.jsonl: skipped 7 bad lines \(line 2, 3, 4, 5, 6, \.\.\.\)") as caught:
        assert read_jsonl(path, skip_bad_lines=True) == [{"ok": 0}, {"ok": 1}]
    assert len(caught) == 1


def test_stop_at_bad_line_reads_a_log_cut_short_by_a_crash(tmp_path):
    path = write(tmp_path / "metrics.jsonl", '{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert read_jsonl(path, stop_at_bad_line=True) == [{"step": 1}, {"step": 2}]
    # nothing after the cut is trusted, even a line that parses
    write(path, '{"step": 1}\n{"st\n{"step": 3}\n')
    assert read_jsonl(path, stop_at_bad_line=True) == [{"step": 1}]
    assert read_jsonl(write(path, "{cut"), stop_at_bad_line=True, allow_empty=True) == []


def test_missing_empty_and_all_bad_files(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl does not exist"):
        read_jsonl(tmp_path / "nope.jsonl")
    empty = write(tmp_path / "empty.jsonl", "\n \n")
    with pytest.raises(DataError, match=r"empty\.jsonl has no records \(empty file\)"):
        read_jsonl(empty)
    assert read_jsonl(empty, allow_empty=True) == []
    bad = write(tmp_path / "bad.jsonl", "{oops\n")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="every line was bad"):
        read_jsonl(bad, skip_bad_lines=True)


def test_write_jsonl_is_atomic_and_one_object_per_line(tmp_path):
    path = tmp_path / "out" / "r.jsonl"
    records = [{"a": 1, "text": "café"}, {"b": None}]
    assert write_jsonl(path, records) == 2
    assert path.read_text(encoding="utf-8").splitlines() == [json.dumps(r, ensure_ascii=False) for r in records]

    def broken():
        yield {"a": 2}
        raise RuntimeError("generator failed")

    with pytest.raises(RuntimeError):
        write_jsonl(path, broken())
    assert read_jsonl(path) == records  # the old file survives
    assert [p.name for p in path.parent.iterdir()] == ["r.jsonl"]  # no temporary file left
