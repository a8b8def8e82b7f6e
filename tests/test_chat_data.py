"""Loading your own chat data: good files load, bad lines are named, nothing is half-written."""

import json

import pytest

from groklm.data.chat_data import load_preferences_jsonl, load_sft_jsonl
from groklm.errors import DataError
from groklm.jsonl import write_jsonl

HI = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


def write_lines(path, lines) -> str:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


def test_sft_file_loads_and_keeps_extra_keys(tmp_path):
    path = write_lines(tmp_path / "sft.jsonl", [{"messages": HI}, "", {"messages": HI, "task": "greet"}])
    assert load_sft_jsonl(path) == [{"messages": HI}, {"messages": HI, "task": "greet"}]


def test_preference_strings_become_messages(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [{"prompt": "Hi", "chosen": "Hello", "rejected": "Go away"}])
    assert load_preferences_jsonl(path) == [
        {"prompt": [{"role": "user", "content": "Hi"}], "chosen": "Hello", "rejected": "Go away"}
    ]


def test_preference_message_lists_share_turns_into_the_prompt(tmp_path):
    call = {"role": "assistant", "content": 'CALL calculator({"expression": "2+2"})'}
    tool = {"role": "tool", "content": "4"}
    line = {
        "prompt": [{"role": "system", "content": "Use tools."}, {"role": "user", "content": "2+2?"}],
        "chosen": [call, tool, {"role": "assistant", "content": "4"}],
        "rejected": [call, tool, {"role": "assistant", "content": "5"}],
    }
    (record,) = load_preferences_jsonl(write_lines(tmp_path / "p.jsonl", [line]))
    assert record["prompt"] == line["prompt"] + [call, tool]
    assert (record["chosen"], record["rejected"]) == ("4", "5")
    single = {"prompt": "2+2?", "chosen": [{"role": "assistant", "content": "4"}], "rejected": "5"}
    assert load_preferences_jsonl(write_lines(tmp_path / "q.jsonl", [single]))[0]["chosen"] == "4"


SFT_BAD = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "messages"),
    ({"conversation": HI}, "messages"),
    ({"messages": []}, "non-empty list"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "role 'robot'"),
    ({"messages": [{"role": "user", "content": 3}]}, "string 'content'"),
    ({"messages": [{"role": "user", "content": "Hi"}]}, "no assistant turn"),
]


@pytest.mark.parametrize("bad, why", SFT_BAD)
def test_bad_sft_line_names_file_line_and_problem(tmp_path, bad, why):
    path = write_lines(tmp_path / "sft.jsonl", [{"messages": HI}, "", bad])
    with pytest.raises(DataError, match=rf"sft\.jsonl, line 3: .*{why}"):
        load_sft_jsonl(path)


PREF_BAD = [
    ({"prompt": "Hi", "chosen": "Hello"}, "missing 'rejected'"),
    ({"prompt": 7, "chosen": "a", "rejected": "b"}, "prompt"),
    ({"prompt": "Hi", "chosen": None, "rejected": "b"}, "chosen"),
    ({"prompt": "Hi", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}, "one assistant message"),
    ({"prompt": "Hi", "chosen": HI, "rejected": "b"}, "one assistant message"),
    ({"prompt": HI, "chosen": "a", "rejected": "b"}, "prompt ends with an assistant"),
]


@pytest.mark.parametrize("bad, why", PREF_BAD)
def test_bad_preference_line_names_file_line_and_problem(tmp_path, bad, why):
    path = write_lines(tmp_path / "prefs.jsonl", [bad])
    with pytest.raises(DataError, match=rf"prefs\.jsonl, line 1: .*{why}"):
        load_preferences_jsonl(path)


def test_skip_bad_lines_warns_with_count_and_line_numbers(tmp_path):
    lines = [{"messages": HI}] + [bad for bad, _ in SFT_BAD] + [{"messages": HI}]
    path = write_lines(tmp_path / "sft.jsonl", lines)
    with pytest.warns(UserWarning, match=r"skipped 7 bad lines \(line 2, 3, 4, 5, 6, \.\.\.\)"):
        assert load_sft_jsonl(path, skip_bad_lines=True) == [{"messages": HI}, {"messages": HI}]


def test_empty_missing_or_all_bad_files_are_errors(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="empty file"):
        load_sft_jsonl(tmp_path / "empty.jsonl")
    with pytest.raises(DataError, match="does not exist"):
        load_preferences_jsonl(tmp_path / "nope.jsonl")
    path = write_lines(tmp_path / "bad.jsonl", ["{oops"])
    with pytest.warns(UserWarning), pytest.raises(DataError, match="every line was bad"):
        load_sft_jsonl(path, skip_bad_lines=True)
    (tmp_path / "latin1.jsonl").write_bytes(b'{"messages": "caf\xe9"}\n')
    with pytest.raises(DataError, match="not UTF-8"):
        load_sft_jsonl(tmp_path / "latin1.jsonl")


def test_write_jsonl_round_trips_atomically(tmp_path):
    records = [{"messages": HI, "task": "café"}] * 3
    assert write_jsonl(tmp_path / "out" / "sft.jsonl", records) == 3
    assert load_sft_jsonl(tmp_path / "out" / "sft.jsonl") == records
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["sft.jsonl"]  # no temporary file left

    def broken():
        yield {"messages": HI}
        raise RuntimeError("generator failed")

    with pytest.raises(RuntimeError):
        write_jsonl(tmp_path / "out" / "sft.jsonl", broken())
    assert load_sft_jsonl(tmp_path / "out" / "sft.jsonl") == records  # the old file survives
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["sft.jsonl"]
