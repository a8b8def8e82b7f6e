"""SentencePiece-style vocabularies ("▁" for spaces, <0xXX> byte fallback) encode and decode exactly
as the `tokenizers` library does with the same tokenizer.json, in each of its setups."""

from __future__ import annotations

import json
import random

import pytest

from groklm.errors import TokenizerError
from groklm.interop.hf_tokenizer import read_hf_tokenizer, write_hf_tokenizer
from groklm.tokenizer import load_tokenizer
from groklm.tokenizer.imports import from_hf_dict
from groklm.tokenizer.metaspace import MetaspaceTokenizer

tokenizers = pytest.importorskip("tokenizers")

PIECES = [
    "a", "b", "the", "The", "cat", " ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", " \n", "\u3000", "\xa0", "0", "1", "42",
    "123456", "3.14", "-", "!", "?!", "'s", "(", "){", "é", "ça", "日本", "語", "🙂", "👩‍💻", "\x00", "\x04", "▁", "▁▁x",
    "don't", "x1", " 1", "  2", "word", "ünïcödé", "Ж", "ß", "\U00041000",
]
TEXT = """The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs!
Ça coûte 12,50 € — «naïve» Съешь ещё этих мягких французских булок. 日本語のテキストです。 🙂👍
def f(x):\n    return x ** 2  # the answer is 42\n\tindented\t\ttabs   and   spaces
Numbers: 0 1 2 3 45 678 9012 3.14159 -7 1e10. Emoji 🚀🚀 and CJK 中文 and Hindi नमस्ते.
"""


def random_strings(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 10))) for _ in range(n)]


def corpus() -> list[str]:
    lines = (TEXT * 3).splitlines() + random_strings(1500, seed=9)
    return [line for line in lines if line]


def build(setup: str) -> dict:
    """Train a small BPE with byte fallback in one of the SentencePiece-style setups."""
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

    hf = tokenizers.Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    strip = [decoders.Strip(" ", 1, 0)]
    if setup == "normalizer":  # Llama 2 / Mistral / TinyLlama
        hf.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    else:
        scheme, split = setup.split("-")
        hf.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=split == "split")
        strip = [] if scheme == "never" else strip
    hf.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), *strip])
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=70, show_progress=False)
    hf.train_from_iterator(corpus(), trainer)
    data = json.loads(hf.to_str())
    vocab = data["model"]["vocab"]
    for b in range(256):  # the byte tokens, as SentencePiece puts them in the vocabulary
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
    }
    return data


SETUPS = ["normalizer", "first-nosplit", "first-split", "always-split", "always-nosplit", "never-split"]


@pytest.fixture(scope="module", params=SETUPS)
def setup(request):
    return request.param, build(request.param)


def texts() -> list[str]:
    return [*random_strings(1500, seed=1), "", " ", "  hi", "hi  ", "▁hi", "a\x04b", "🙂", "a\x01b ꙮ", *TEXT.splitlines()]


def test_encode_decode_match_tokenizers(setup):
    name, data = setup
    hf = tokenizers.Tokenizer.from_str(json.dumps(data))
    tok = from_hf_dict(data)
    assert isinstance(tok, MetaspaceTokenizer)
    assert tok.conventions.bos_token == "<s>" and tok.conventions.eos_token == "</s>"
    samples = texts()
    expected = [e.ids for e in hf.encode_batch(samples, add_special_tokens=False)]
    assert tok.encode_batch(samples) == expected
    assert [tok.vocab["<0x01>"], tok.vocab["<0xEA>"]] == expected[samples.index("a\x01b ꙮ")][2:4] or \
        tok.vocab["<0x01>"] in expected[samples.index("a\x01b ꙮ")]  # byte fallback was exercised
    for text, ids in zip(samples, expected):
        assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=False), (name, text)
    # special tokens: cut out when allowed, as the library always does
    specials = ["<s>hello</s>", "a<s> b", "<unk>x</s></s>  y", " <s>", "</s>"]
    assert [tok.encode(t, allowed_special="all") for t in specials] == [e.ids for e in hf.encode_batch(specials, add_special_tokens=False)]
    assert tok.special_tokens["<s>"] not in tok.encode("<s>hello")


def test_a_text_encoded_in_pieces_decodes_as_the_whole(setup):
    """Chat formats encode a rendering piece by piece (tokenizer/chat.py): a piece that continues
    the text gets no prefix "▁", so the pieces decode, in `tokenizers`, to what the whole does."""
    name, data = setup
    hf = tokenizers.Tokenizer.from_str(json.dumps(data))
    tok = from_hf_dict(data)
    rng = random.Random(5)
    for text in texts()[:400]:
        cut = rng.randint(0, len(text))
        head, tail = text[:cut], text[cut:]
        ids = tok.encode(head) + (tok.encode_continuation(tail) if head else tok.encode(tail))
        whole = hf.encode(text, add_special_tokens=False).ids
        assert hf.decode(ids, skip_special_tokens=False) == hf.decode(whole, skip_special_tokens=False), (name, head, tail)
    # within one call, a piece after a special token begins anew, as between a whole text's special tokens
    text = "a </s> b<s>c"
    head = tok.encode("a")
    assert hf.decode(head + tok.encode_continuation(text[1:], "all"), skip_special_tokens=False) == hf.decode(
        hf.encode(text, add_special_tokens=False).ids, skip_special_tokens=False)


def test_streaming_and_saving(setup, tmp_path):
    _, data = setup
    tok = from_hf_dict(data)
    text = "  Hello wörld 🙂 of 42 cats\n\ttabs"
    ids = tok.encode(text)
    stream = tok.stream_decoder()
    assert "".join(stream.push(i) for i in ids) + stream.flush() == tok.decode(ids)
    tok.save(tmp_path / "ours")
    again = load_tokenizer(tmp_path / "ours")
    assert isinstance(again, MetaspaceTokenizer) and again.conventions == tok.conventions
    assert again.encode_batch(texts()[:300]) == tok.encode_batch(texts()[:300])
    assert again.token_bytes(tok.vocab["<0x0A>"]) == b"\n" and again.decode([10**6]) == "\ufffd"
    with pytest.raises(TokenizerError):
        again.token_bytes(10**6)


def test_written_as_tokenizer_json_and_read_back(setup, tmp_path):
    """write_hf_tokenizer -> the `tokenizers` library encodes as we do; read_hf_tokenizer round-trips."""
    name, data = setup
    tok = from_hf_dict(data)
    note = write_hf_tokenizer(tok, tmp_path / "hf", 128)
    assert "written" in note
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json"))
    samples = texts()[:500]
    assert [e.ids for e in hf.encode_batch(samples, add_special_tokens=False)] == tok.encode_batch(samples)
    back = read_hf_tokenizer(tmp_path / "hf")
    assert back.encode_batch(samples) == tok.encode_batch(samples)
    assert (back.conventions.eos_token, back.conventions.bos_token) == ("</s>", "<s>")


def test_unknown_setups_are_refused():
    data = build("normalizer")
    data["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Lowercase"}]}
    with pytest.raises(TokenizerError, match="SentencePiece"):
        from_hf_dict(data)
