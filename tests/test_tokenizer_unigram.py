"""The Unigram tokenizer: Viterbi picks the likeliest segmentation, every text comes back exactly,
training fills the vocabulary, byte fallback, the file, and `--balance`."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groklm.tokenizer import load_tokenizer
from groklm.tokenizer.balance import balanced_chunk_counts
from groklm.tokenizer.unigram import PATTERN, UnigramTokenizer, viterbi

from helpers.cli import run

SAMPLE = Path(__file__).resolve().parents[1] / "benchmarks" / "tokenizer_data"
TEXT = "The cat sat on the mat. The dog sat on the log.\nCafé crème, 日本語の本, Москва.\n" * 20


@pytest.fixture(scope="module")
def trained() -> UnigramTokenizer:
    return UnigramTokenizer.train(TEXT, 400)


def segmentations(text: str):
    """Every way to cut `text` into non-empty parts."""
    for cuts in itertools.product([False, True], repeat=len(text) - 1):
        parts, start = [], 0
        for i, cut in enumerate(cuts, start=1):
            if cut:
                parts.append(text[start:i])
                start = i
        yield [*parts, text[start:]]


def test_viterbi_picks_the_likeliest_segmentation():
    rng = random.Random(0)
    pieces = ["a", "b", "c", "ab", "bc", "ca", "abc", "bca", "cab", "aa", "abca"]
    for _ in range(30):
        scores = {p: math.log(rng.random()) for p in pieces}
        text = "".join(rng.choice("abc") for _ in range(rng.randint(1, 9)))
        best = max(sum(scores[p] for p in seg) for seg in segmentations(text) if all(p in scores for p in seg))
        found = viterbi(text, scores, max_len=4, byte_score=-100.0)
        # (the same pieces in another order score the same: compare scores, not orders)
        assert "".join(found) == text
        assert sum(scores[p] for p in found) == pytest.approx(best)


def test_viterbi_agrees_with_hf_tokenizers_unigram():
    tokenizers = pytest.importorskip("tokenizers")
    rng = random.Random(1)
    pieces = ["a", "b", "c", "ab", "bc", "abc", "cab", "bb", "ccab"]
    for _ in range(20):
        scores = {p: math.log(rng.random()) for p in pieces}
        hf = tokenizers.Tokenizer(tokenizers.models.Unigram([("<unk>", -50.0), *scores.items()], unk_id=0))
        text = "".join(rng.choice("abc") for _ in range(rng.randint(1, 30)))
        ours = viterbi(text, scores, max_len=4, byte_score=-100.0)
        assert sum(scores[p] for p in ours) == pytest.approx(sum(scores[p] for p in hf.encode(text).tokens))


def test_training_reaches_the_vocab_size(trained):
    assert trained.vocab_size == 400
    assert len(trained.scores) == 400 - 256 - 3
    assert set("The cat.日本") <= set(trained.scores)  # the characters of the corpus are pieces
    assert " the" in trained.scores or " sat" in trained.scores  # and frequent words become pieces


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_every_text_round_trips(trained, text):
    ids = trained.encode(text)
    assert trained.decode(ids) == text
    assert all(0 <= i < trained.vocab_size for i in ids)


@settings(max_examples=100, deadline=None)
@given(st.binary())
def test_every_byte_sequence_round_trips_as_its_text(trained, data):
    text = data.decode("utf-8", errors="replace")
    assert trained.decode_bytes(trained.encode(text)) == text.encode("utf-8")


def test_byte_fallback_for_unseen_characters(trained):
    assert trained.encode("🙂") == list("🙂".encode("utf-8"))  # ids 0..255 are the bytes
    ids = trained.encode("cat 🙂 Ω")
    assert trained.decode(ids) == "cat 🙂 Ω"
    assert trained.token_bytes(0xF0) == b"\xf0"


def test_special_tokens_only_when_allowed(trained):
    eot = trained.special_tokens["<|endoftext|>"]
    assert trained.encode("a<|endoftext|>", allowed_special="all")[-1] == eot
    assert eot not in trained.encode("a<|endoftext|>")


def test_save_and_load_through_the_normal_loader(trained, tmp_path):
    trained.save(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert isinstance(loaded, UnigramTokenizer)
    assert loaded.vocab_size == trained.vocab_size
    assert loaded.encode(TEXT) == trained.encode(TEXT)
    assert loaded.special_tokens == trained.special_tokens


def write_two_languages(tmp_path) -> tuple[Path, Path]:
    big, small = tmp_path / "en.txt", tmp_path / "sw.txt"
    big.write_text((SAMPLE / "en.txt").read_text(encoding="utf-8") * 20, encoding="utf-8")
    small.write_text((SAMPLE / "sw.txt").read_text(encoding="utf-8"), encoding="utf-8")
    return big, small


def characters_of(counts: Counter, words: set[str]) -> int:
    return sum(len(chunk) * n for chunk, n in counts.items() if chunk.strip() in words)


def test_balance_weighs_every_file_the_same(tmp_path):
    big, small = write_two_languages(tmp_path)
    only_small = set(small.read_text(encoding="utf-8").split()) - set(big.read_text(encoding="utf-8").split())
    raw = balanced_chunk_counts([small], PATTERN)  # one file: its own counts
    balanced = balanced_chunk_counts([big, small], PATTERN)
    # the small file is 20 times shorter, so its chunks count about 20 times as much
    ratio = characters_of(balanced, only_small) / characters_of(raw, only_small)
    assert ratio == pytest.approx(len(big.read_text(encoding="utf-8")) / len(small.read_text(encoding="utf-8")), rel=0.05)


@pytest.mark.parametrize("kind", ["unigram", "bpe"])
def test_balance_gives_the_small_language_its_share(tmp_path, capsys, kind):
    big, small = write_two_languages(tmp_path)
    costs = {}
    for flag in ([], ["--balance"]):
        out = tmp_path / f"{kind}{flag}"
        argv = ["tokenizer", "train", "--type", kind, "--vocab-size", "500", "--input", str(big), str(small),
                "--out", str(out), "--no-progress"]
        assert run(capsys, *argv, *flag)[0] == 0
        costs[bool(flag)] = len(load_tokenizer(out).encode(small.read_text(encoding="utf-8")))
    assert costs[True] < costs[False]


def test_train_from_the_command_line(tmp_path, capsys):
    code, out, _ = run(capsys, "tokenizer", "train", "--type", "unigram", "--vocab-size", "600", "--input",
                       str(SAMPLE / "ja.txt"), str(SAMPLE / "ko.txt"), "--out", str(tmp_path / "u"), "--no-progress")
    assert code == 0 and "unigram, vocab size 600" in out
    code, out, _ = run(capsys, "tokenizer", "encode", "--tokenizer", str(tmp_path / "u"), "川のほとり 🙂")
    ids = out.split()
    code, out, _ = run(capsys, "tokenizer", "decode", "--tokenizer", str(tmp_path / "u"), *ids)
    assert out == "川のほとり 🙂"
