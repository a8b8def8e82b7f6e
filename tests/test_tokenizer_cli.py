"""`groklm tokenizer ...`: the happy paths, and a clear message (exit 1, no traceback) on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cli import run

ROOT = Path(__file__).resolve().parents[1]
TEXT = "The cat sat on the mat. The dog sat on the log.\nCafé crème, 日本語, 🙂.\n" * 200




@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture
def trained(tmp_path, corpus, capsys) -> Path:
    out = tmp_path / "tok"
    code, stdout, _ = run(capsys, "tokenizer", "train", "--input", str(corpus), "--vocab-size", "300", "--out", str(out), "--no-progress")
    assert code == 0 and "vocab size" in stdout
    return out


def test_train_encode_decode(trained, capsys):
    code, out, _ = run(capsys, "tokenizer", "encode", "--tokenizer", str(trained), "Café <|endoftext|>")
    assert code == 0
    ids = [int(x) for x in out.split()]
    code, out, _ = run(capsys, "tokenizer", "decode", "--tokenizer", str(trained), *map(str, ids))
    assert code == 0 and out == "Café <|endoftext|>"
    code, out, _ = run(capsys, "tokenizer", "encode", "--tokenizer", str(trained), "--allow-special", "--json", "<|endoftext|>")
    assert json.loads(out) == [297]


def test_show(trained, capsys):
    code, out, _ = run(capsys, "tokenizer", "show", "--tokenizer", str(trained), "The cat")
    assert code == 0 and "\x1b[" in out and "tokens" in out
    code, out, _ = run(capsys, "tokenizer", "show", "--tokenizer", str(trained), "--no-color", "The cat")
    assert code == 0 and "\x1b[" not in out and "|" in out


def test_stats(trained, corpus, tmp_path, capsys):
    other = tmp_path / "chars"
    assert run(capsys, "tokenizer", "train", "--type", "char", "--input", str(corpus), "--out", str(other), "--no-progress")[0] == 0
    code, out, _ = run(capsys, "tokenizer", "stats", "--tokenizer", str(trained), "--tokenizer", str(other), str(corpus), "--json")
    assert code == 0
    row = json.loads(out)["files"][0]
    bpe, chars = row["tokenizers"]
    assert bpe["bytes_per_token"] > chars["bytes_per_token"] >= 1.0
    assert chars["tokens"] == len(TEXT)
    code, out, _ = run(capsys, "tokenizer", "stats", "--tokenizer", str(trained), str(corpus))
    assert code == 0 and "bytes/tok" in out


def test_import(tmp_path, capsys):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    hf.train_from_iterator([TEXT], trainer)
    hf.save(str(tmp_path / "tokenizer.json"))
    code, out, _ = run(capsys, "tokenizer", "import", str(tmp_path / "tokenizer.json"), "--out", str(tmp_path / "ours"))
    assert code == 0
    code, out, _ = run(capsys, "tokenizer", "encode", "--tokenizer", str(tmp_path / "ours"), "The cat sat")
    assert [int(x) for x in out.split()] == hf.encode("The cat sat").ids


def expect_error(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 1, (out, err)
    assert err.startswith("groklm: error:") and message in err, err
    assert "Traceback" not in err


def test_bad_input(tmp_path, corpus, trained, capsys):
    out = str(tmp_path / "out")
    train = ["tokenizer", "train", "--no-progress", "--out", out]
    expect_error(capsys, [*train, "--input", str(tmp_path / "missing.txt"), "--vocab-size", "300"], "input not found")
    (tmp_path / "empty.txt").write_text("")
    expect_error(capsys, [*train, "--input", str(tmp_path / "empty.txt"), "--vocab-size", "300"], "empty")
    expect_error(capsys, [*train, "--input", str(corpus), "--vocab-size", "100"], "too small")
    expect_error(capsys, [*train, "--input", str(corpus)], "--vocab-size is required")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    expect_error(capsys, [*train, "--input", str(tmp_path / "latin1.txt"), "--vocab-size", "300"], "not valid UTF-8")
    expect_error(capsys, [*train, "--input", str(corpus), "--vocab-size", "300", "--pattern", "(["], "not a valid regex")

    expect_error(capsys, ["tokenizer", "encode", "--tokenizer", str(tmp_path / "nope"), "x"], "not found")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "tokenizer.json").write_text('{"format": "groklm-tokenizer", "version": 1, "type": "bpe", "merges": 5')
    expect_error(capsys, ["tokenizer", "show", "--tokenizer", str(tmp_path / "corrupt"), "x"], "corrupt")
    expect_error(capsys, ["tokenizer", "decode", "--tokenizer", str(trained), "1", "two"], "integer token ids")
    expect_error(capsys, ["tokenizer", "stats", "--tokenizer", str(trained), str(tmp_path / "missing.txt")], "not a file")


def test_replace_non_utf8(tmp_path, capsys):
    (tmp_path / "latin1.txt").write_bytes("café crème ".encode("latin-1") * 30)
    with pytest.warns(UserWarning, match="replaced with U\\+FFFD"):
        code, _, _ = run(capsys, "tokenizer", "train", "--no-progress", "--type", "char", "--errors", "replace",
                         "--input", str(tmp_path / "latin1.txt"), "--out", str(tmp_path / "c"))
    assert code == 0


def test_real_entry_point(tmp_path, corpus):
    """`python -m groklm tokenizer ...` end to end, in a process of its own."""
    result = subprocess.run(
        [sys.executable, "-m", "groklm", "tokenizer", "train", "--input", str(tmp_path / "missing"), "--vocab-size", "300",
         "--out", str(tmp_path / "t")],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 1 and "input not found" in result.stderr and "Traceback" not in result.stderr
