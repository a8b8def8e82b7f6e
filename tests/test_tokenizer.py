"""The BPE and character tokenizers: training, round trips, special tokens, files, bad input."""

from __future__ import annotations

import json
import pickle
import warnings
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groklm.errors import DataError, GroklmError, TokenizerError
from groklm.tokenizer import (
    DEFAULT_SPECIAL_TOKENS,
    GPT2_PATTERN,
    CharTokenizer,
    Tokenizer,
    load_tokenizer,
)
from groklm.tokenizer.trainer import count_chunks, train_merges

ROOT = Path(__file__).resolve().parents[1]

MULTILINGUAL = (
    "The quick brown fox jumps over the lazy dog. It's 12,345 times; they'll say 'hello'.\n"
    "Le cœur a ses raisons que la raison ne connaît point. Ça coûte 12 €.\n"
    "Съешь же ещё этих мягких французских булок, да выпей чаю.\n"
    "日本語のテキストも少し入れておきます。東京は大きい。\n"
    "नमस्ते दुनिया। 🙂🚀 emoji and ZWJ 👩‍💻 sequences.\n"
    "def f(x):\r\n\treturn x ** 2  # a comment\n\n\n"
)


def corpus_text() -> str:
    """About 150 KB of real text: this repository's Python sources plus multilingual lines."""
    sources = sorted((ROOT / "groklm").rglob("*.py"))
    text = "".join(p.read_text(encoding="utf-8") for p in sources)
    return (text + MULTILINGUAL * 200)[:150_000]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train(corpus_text(), 700)


# --- round trips and the two encoders ------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_roundtrip_arbitrary_unicode(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.encode_reference(text) == ids
    assert all(0 <= i < tok.vocab_size for i in ids)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "a", " b", "\n", "é", "<|"]), max_size=12).map("".join))
def test_special_text_roundtrip_and_parity(tok, text):
    for allowed in ((), "all", {"<|im_start|>"}):
        ids = tok.encode(text, allowed_special=allowed)
        assert tok.encode_reference(text, allowed_special=allowed) == ids
        assert tok.decode(ids) == text


def test_encode_batch_matches_encode(tok):
    texts = MULTILINGUAL.splitlines(keepends=True)
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]
    assert tok.encode_batch(["<|im_end|>"], allowed_special="all") == [[tok.special_tokens["<|im_end|>"]]]


def test_to_tiktoken_gives_the_same_ids(tok):
    enc = tok.to_tiktoken()
    assert enc.encode_ordinary(MULTILINGUAL) == tok.encode(MULTILINGUAL)
    assert enc.decode(tok.encode(MULTILINGUAL)) == MULTILINGUAL


# --- ids and vocabulary ------------------------------------------------------------------------


def test_id_layout(tok):
    assert tok.vocab_size == 700
    assert list(tok.special_tokens) == list(DEFAULT_SPECIAL_TOKENS)
    assert sorted(tok.special_tokens.values()) == [697, 698, 699]
    assert tok.eot_id == 697
    assert [m[2] for m in tok.merges] == list(range(256, 697))
    for b in range(256):
        assert tok.token_bytes(b) == bytes([b])
    left, right, new = tok.merges[0]
    assert tok.token_bytes(new) == tok.token_bytes(left) + tok.token_bytes(right)
    assert tok.token_bytes(tok.eot_id) == b"<|endoftext|>"
    with pytest.raises(TokenizerError):
        tok.token_bytes(700)


def test_every_token_has_unique_bytes(tok):
    regular = [tok.token_bytes(i) for i in range(697)]
    assert len(set(regular)) == len(regular)


@pytest.mark.filterwarnings("ignore:the corpus gave only")
def test_user_special_tokens():
    t = Tokenizer.train("hello hello world", 300, special_tokens=["<|pad|>", "<|endoftext|>"])
    assert list(t.special_tokens) == [*DEFAULT_SPECIAL_TOKENS, "<|pad|>"]
    assert t.special_tokens["<|pad|>"] == t.vocab_size - 1
    assert t.encode("<|pad|>", allowed_special={"<|pad|>"}) == [t.special_tokens["<|pad|>"]]


def test_special_text_is_ordinary_text_by_default(tok):
    text = "user: <|im_end|><|im_start|>system<|endoftext|>"
    specials = set(tok.special_tokens.values())
    for ids in (tok.encode(text), tok.encode_reference(text), tok.encode_batch([text])[0]):
        assert not specials & set(ids)
        assert tok.decode(ids) == text
    allowed = tok.encode(text, allowed_special="all")
    assert [i for i in allowed if i in specials] == [
        tok.special_tokens["<|im_end|>"],
        tok.special_tokens["<|im_start|>"],
        tok.eot_id,
    ]
    only = tok.encode(text, allowed_special={"<|endoftext|>"})
    assert [i for i in only if i in specials] == [tok.eot_id]
    with pytest.raises(TokenizerError, match="not special tokens"):
        tok.encode(text, allowed_special={"<|nope|>"})


@pytest.mark.filterwarnings("ignore:the corpus gave only")
def test_special_tokens_are_cut_out_of_training_text():
    t = Tokenizer.train("<|endoftext|>" * 50 + "ab " * 50, 270)
    learned = {t.token_bytes(m[2]) for m in t.merges}
    assert not any(b"endof" in b or b"<|" in b for b in learned)


# --- decoding ------------------------------------------------------------------------------------


def test_decode_never_raises(tok):
    ids = tok.encode("é🙂")
    assert tok.decode(ids[:1]) in ("\ufffd", "é")
    assert tok.decode([0xC3]) == "\ufffd"  # a lone lead byte
    assert tok.decode([-1, 10**9, 65]) == "\ufffd\ufffdA"
    assert tok.decode([]) == ""


def test_decode_accepts_numpy(tok):
    np = pytest.importorskip("numpy")
    ids = tok.encode("hello world")
    assert tok.decode(np.array(ids)) == "hello world"


def test_stream_decoder_emits_only_complete_text(tok):
    text = "héllo wörld 🙂🚀 日本語 done"
    decoder = tok.stream_decoder()
    pieces = [decoder.push(i) for i in tok.encode(text)] + [decoder.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    # bytes of a 4-byte emoji, one at a time: nothing until the last one
    decoder = tok.stream_decoder()
    emoji = "🙂".encode()
    assert [decoder.push(b) for b in emoji] == ["", "", "", "🙂"]
    decoder.push(emoji[0])
    assert decoder.flush() == "\ufffd"  # a cut sequence is replaced, not dropped


# --- training ------------------------------------------------------------------------------------


def naive_train(text: str, pattern: str, num_merges: int, min_frequency: int = 2) -> list[tuple[int, int]]:
    """The textbook trainer: recount every pair of every chunk before each merge."""
    import regex

    chunks = Counter(regex.findall(pattern, text))
    words = {tuple(c.encode()): n for c, n in chunks.items()}
    vocab = {i: bytes([i]) for i in range(256)}
    merges: list[tuple[int, int]] = []
    banned: set[tuple[int, int]] = set()
    while len(merges) < num_merges:
        stats: Counter = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                stats[pair] += n
        candidates = [(n, p) for p, n in stats.items() if p not in banned and n >= min_frequency]
        if not candidates:
            break
        best_count = max(n for n, _ in candidates)
        pair = min(p for n, p in candidates if n == best_count)
        if vocab[pair[0]] + vocab[pair[1]] in vocab.values():
            banned.add(pair)
            continue
        new = 256 + len(merges)
        vocab[new] = vocab[pair[0]] + vocab[pair[1]]
        merges.append(pair)
        merged = {}
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
                    out.append(new)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + n
        words = merged
    return merges


@pytest.mark.parametrize("text", [corpus_text()[:20_000], "aaaaaaaa abababab aaab " * 30 + "xyzxyz " * 7])
def test_incremental_trainer_matches_naive_recount(text):
    counts = count_chunks([text], GPT2_PATTERN)
    assert train_merges(counts, 150) == naive_train(text, GPT2_PATTERN, 150)


def test_training_is_deterministic_and_input_forms_agree(tmp_path):
    text = corpus_text()[:40_000]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text(text[:20_000], encoding="utf-8")
    (tmp_path / "docs" / "b.txt").write_text(text[20_000:], encoding="utf-8")
    (tmp_path / "docs" / ".hidden").write_text("ignored ignored ignored", encoding="utf-8")
    base = Tokenizer.train(text, 400).merges
    assert Tokenizer.train(text, 400).merges == base
    assert Tokenizer.train(tmp_path / "docs", 400).merges == Tokenizer.train([text[:20_000], text[20_000:]], 400).merges
    assert Tokenizer.train(iter([text]), 400, progress=True).merges == base


@pytest.mark.filterwarnings("ignore:the corpus gave only")
def test_gpt2_and_custom_patterns():
    t = Tokenizer.train(corpus_text()[:30_000], 400, pattern="gpt2")
    assert t.pattern == GPT2_PATTERN
    custom = Tokenizer.train("one two three " * 20, 270, pattern=r"\S+|\s+")
    assert custom.decode(custom.encode("one  two\n")) == "one  two\n"
    with pytest.raises(TokenizerError, match="not a valid regex"):
        Tokenizer.train("abc", 300, pattern="([")
    with pytest.raises(TokenizerError, match="every character"):
        Tokenizer.train("abc", 300, pattern="gpt-4")


def test_min_frequency_stops_early_with_a_warning():
    with pytest.warns(UserWarning, match="only"):
        t = Tokenizer.train("abcdef", 1000)
    assert t.vocab_size == 259 and not t.merges
    assert t.decode(t.encode("fedcba")) == "fedcba"


# --- files ---------------------------------------------------------------------------------------


def test_save_load_roundtrip(tok, tmp_path):
    path = tok.save(tmp_path / "tok")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["type"] == "bpe" and data["pattern"] == tok.pattern
    assert data["merges"][0][:3] == list(tok.merges[0])
    loaded = load_tokenizer(tmp_path / "tok")
    assert isinstance(loaded, Tokenizer) and Tokenizer.load(tmp_path / "tok").merges == tok.merges
    assert loaded.merges == tok.merges and loaded.special_tokens == tok.special_tokens
    assert loaded.encode(MULTILINGUAL) == tok.encode(MULTILINGUAL)
    assert load_tokenizer(path).vocab_size == tok.vocab_size  # the file itself works too


def test_pickle(tok):
    tok.encode("warm up the fast path")
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.encode(MULTILINGUAL) == tok.encode(MULTILINGUAL)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"format": "groklm-tokenizer", "version": 1}', "'type'"),
        ('{"format": "groklm-tokenizer", "version": 1, "type": "bpe", "pattern": "gpt4", "special_tokens": {}}', "merges"),
        ('{"format": "groklm-tokenizer", "version": 1, "type": "bpe", "pattern": "gpt4", "merges": [[1, 999, 256, "x"]], '
         '"special_tokens": {"<|endoftext|>": 300, "<|im_start|>": 301, "<|im_end|>": 302}}', "not defined"),
        ('{"format": "groklm-tokenizer", "version": 1, "type": "bpe", "pattern": "gpt4", "merges": [], '
         '"special_tokens": {"<|endoftext|>": 3, "<|im_start|>": 301, "<|im_end|>": 302}}', "reuse ids"),
        ('{"format": "groklm-tokenizer", "version": 1, "type": "char", "special_tokens": {}}', "'chars'"),
        ('{"format": "groklm-tokenizer", "version": 9, "type": "bpe"}', "version"),
    ],
)
def test_corrupt_tokenizer_files(tmp_path, content, message):
    (tmp_path / "tokenizer.json").write_text(content, encoding="utf-8")
    with pytest.raises(TokenizerError, match=message):
        load_tokenizer(tmp_path)


def test_missing_tokenizer(tmp_path):
    with pytest.raises(TokenizerError, match="has no tokenizer.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(TokenizerError, match="not found"):
        load_tokenizer(tmp_path / "nope")


# --- bad training input --------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:the corpus gave only")
def test_bad_training_input(tmp_path):
    with pytest.raises(DataError, match="empty"):
        Tokenizer.train("", 300)
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(DataError, match="empty"):
        Tokenizer.train(tmp_path / "empty.txt", 300)
    with pytest.raises(DataError, match="empty"):
        Tokenizer.train(tmp_path / "emptydir", 300)
    with pytest.raises(DataError, match="input not found"):
        Tokenizer.train(tmp_path / "missing.txt", 300)
    with pytest.raises(TokenizerError, match="too small"):
        Tokenizer.train("hello", 258)
    with pytest.raises(TokenizerError, match="too small"):
        Tokenizer.train("hello", 300, special_tokens=[f"<|s{i}|>" for i in range(50)])
    with pytest.raises(DataError, match="bytes"):
        Tokenizer.train([b"bytes"], 300)


@pytest.mark.filterwarnings("ignore:the corpus gave only")
def test_non_utf8_input(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café crème brûlée ".encode("latin-1") * 20)
    with pytest.raises(DataError, match=r"not valid UTF-8 .*offset 3.*errors='replace'"):
        Tokenizer.train(bad, 300)
    with pytest.warns(UserWarning, match="80 invalid UTF-8"):
        chars = CharTokenizer.train(bad, errors="replace")
    assert "\ufffd" in chars.chars
    with pytest.warns(UserWarning, match="replaced"):
        Tokenizer.train(bad, 300, errors="replace")


@pytest.mark.filterwarnings("ignore:the corpus gave only")
def test_str_naming_a_file_warns(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("hello hello")
    with pytest.warns(UserWarning, match="read as text"):
        Tokenizer.train(str(path), 260)


def test_errors_are_groklm_errors():
    assert issubclass(TokenizerError, GroklmError) and issubclass(DataError, GroklmError)


# --- the character tokenizer ---------------------------------------------------------------------


def test_char_tokenizer(tmp_path):
    text = "hello world\nthe end"
    t = CharTokenizer.train(text)
    assert t.chars == sorted(set(text))
    n = len(t.chars)
    assert t.special_tokens == {"<|endoftext|>": n, "<|im_start|>": n + 1, "<|im_end|>": n + 2}
    assert t.vocab_size == n + 3 and t.eot_id == n
    ids = t.encode("hello")
    assert ids == [t.chars.index(c) for c in "hello"] and t.decode(ids) == "hello"
    assert t.encode("he<|endoftext|>", allowed_special="all") == [*t.encode("he"), n]
    with pytest.raises(TokenizerError, match=r"'<'.*not in this character vocabulary"):
        t.encode("he<|endoftext|>")  # as text, '<' is not in the vocabulary
    with pytest.raises(TokenizerError, match="'z'"):
        t.encode("hez")
    assert t.decode([0, 10**6, n]) == t.chars[0] + "\ufffd<|endoftext|>"
    assert t.token_bytes(t.chars.index("h")) == b"h"
    decoder = t.stream_decoder()
    assert "".join(decoder.push(i) for i in ids) + decoder.flush() == "hello"
    t.save(tmp_path / "c")
    loaded = load_tokenizer(tmp_path / "c")
    assert isinstance(loaded, CharTokenizer) and loaded.chars == t.chars and loaded.special_tokens == t.special_tokens
    with pytest.raises(TokenizerError):
        Tokenizer.load(tmp_path / "c")


def test_char_tokenizer_from_files(tmp_path):
    (tmp_path / "a.txt").write_text("abc")
    (tmp_path / "b.txt").write_text("cd")
    assert CharTokenizer.train(tmp_path).chars == ["a", "b", "c", "d"]
    assert CharTokenizer.train([tmp_path / "a.txt", "xy"]).chars == ["a", "b", "c", "x", "y"]
    with pytest.raises(DataError, match="empty"):
        CharTokenizer.train("")


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="abc é🙂\n", max_size=50))
def test_char_roundtrip(text):
    t = CharTokenizer.train("abc é🙂\n")
    assert t.decode(t.encode(text)) == text


def test_no_stray_warnings(tok):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok.encode("plain text")
        tok.decode(tok.encode("plain text"))
