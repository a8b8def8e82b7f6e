"""`groklm tokenizer stats` with several tokenizers: tokens per byte and per word, the cost of
each language relative to a reference file, the plot, and tiktoken encodings by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from groklm.tokenizer import CharTokenizer, Tokenizer
from groklm.tokenizer.unigram import UnigramTokenizer
from groklm.tokenizer.visualize import count_words

from helpers.cli import run

SAMPLE = Path(__file__).resolve().parents[1] / "benchmarks" / "tokenizer_data"
LANGUAGES = ["en", "fr", "ru", "el", "ar", "hi", "zh", "ja", "ko", "sw"]


def tiktoken_available(name: str) -> bool:
    """Does tiktoken have this encoding's rank file at hand (its cache; tests use no network)?"""
    tiktoken = pytest.importorskip("tiktoken")
    try:
        tiktoken.get_encoding(name)
    except Exception:
        return False
    return True


def test_the_sample_has_every_language():
    for code in LANGUAGES:
        assert len((SAMPLE / f"{code}.txt").read_text(encoding="utf-8")) > 300


def test_words_are_whitespace_words_or_cjk_characters():
    assert count_words("The cat  sat.\n") == 3
    assert count_words("河边的小城") == 5
    assert count_words("川のほとりの町 Tokyo") == 8
    assert count_words("강가의 마을") == 2  # Korean writes spaces between words


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> list[str]:
    """A BPE, a Unigram and a character tokenizer trained on the sample."""
    root = tmp_path_factory.mktemp("toks")
    files = [SAMPLE / f"{code}.txt" for code in LANGUAGES]
    for name, tokenizer in [
        ("bpe", Tokenizer.train(files, 600)),
        ("unigram", UnigramTokenizer.train(files, 600)),
        ("char", CharTokenizer.train(files)),
    ]:
        tokenizer.save(root / name)
    return [str(root / name) for name in ("bpe", "unigram", "char")]


def test_stats_of_several_tokenizers_relative_to_a_reference(tokenizers, tmp_path, capsys):
    files = [str(SAMPLE / f"{code}.txt") for code in LANGUAGES]
    flags = [x for t in tokenizers for x in ("--tokenizer", t)]
    plot = tmp_path / "cost.png"
    code, out, err = run(capsys, "tokenizer", "stats", *flags, *files, "--reference", "en", "--plot", str(plot), "--json")
    assert code == 0, err
    report = json.loads(out)
    rows = {Path(row["file"]).stem: row for row in report["files"]}
    assert all(len(row["tokenizers"]) == 3 for row in rows.values())
    assert [s["relative_cost"] for s in rows["en"]["tokenizers"]] == [1.0, 1.0, 1.0]
    bpe, unigram, chars = rows["hi"]["tokenizers"]
    assert chars["tokens"] == rows["hi"]["chars"]
    assert chars["relative_cost"] == pytest.approx(rows["hi"]["chars"] / rows["en"]["chars"], abs=1e-3)
    assert bpe["tokens_per_byte"] == pytest.approx(bpe["tokens"] / rows["hi"]["bytes"], abs=1e-4)
    assert plot.read_bytes().startswith(b"\x89PNG")

    code, out, _ = run(capsys, "tokenizer", "stats", *flags, *files, "--reference", "en")
    assert code == 0 and "cost[3]" in out and "[3] " + tokenizers[2] in out


def test_a_reference_that_is_not_a_file_is_refused(tokenizers, capsys):
    code, _, err = run(capsys, "tokenizer", "stats", "--tokenizer", tokenizers[0], str(SAMPLE / "fr.txt"), "--reference", "en")
    assert code == 1 and "--reference en" in err


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_tiktoken_encodings_by_name(tokenizers, capsys, name):
    if not tiktoken_available(name):
        pytest.skip(f"tiktoken's {name} rank file is not cached and tests use no network")
    code, out, _ = run(capsys, "tokenizer", "stats", "--tokenizer", f"tiktoken:{name}", "--tokenizer", tokenizers[0],
                       str(SAMPLE / "en.txt"), str(SAMPLE / "zh.txt"), "--reference", "en", "--json")
    assert code == 0
    first = json.loads(out)["files"][0]["tokenizers"][0]
    tiktoken = pytest.importorskip("tiktoken")
    assert first["tokens"] == len(tiktoken.get_encoding(name).encode_ordinary((SAMPLE / "en.txt").read_text(encoding="utf-8")))


def test_an_unavailable_tiktoken_encoding_says_so(monkeypatch, capsys):
    tiktoken = pytest.importorskip("tiktoken")

    def offline(name):
        raise ConnectionError("no network")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    code, _, err = run(capsys, "tokenizer", "stats", "--tokenizer", "tiktoken:cl100k_base", str(SAMPLE / "en.txt"))
    assert code == 1 and "is not available" in err and "TIKTOKEN_CACHE_DIR" in err
    code, _, err = run(capsys, "tokenizer", "stats", "--tokenizer", "tiktoken:nonesuch", str(SAMPLE / "en.txt"))
    assert code == 1 and "no encoding 'nonesuch'" in err
