"""Vocabularies made elsewhere, loaded offline, encode exactly as the original libraries do."""

from __future__ import annotations

import json
import random
import sysconfig
from pathlib import Path

import pytest

from groklm.errors import TokenizerError
from groklm.tokenizer import GPT2_PATTERN, Tokenizer, load_tokenizer
from groklm.tokenizer.imports import byte_alphabet, from_hf_dict, from_tiktoken_file

tokenizers = pytest.importorskip("tokenizers")
tiktoken = pytest.importorskip("tiktoken")

SPECIALS = ["<|endoftext|>", "<pad>"]


def documents(n_bytes: int, skip: int = 0) -> list[str]:
    """Standard-library sources (sorted), plus a few lines in other scripts."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs, size = [], 0
    for path in sorted(root.glob("*.py"))[skip:]:
        try:
            docs.append(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
        size += len(docs[-1])
        if size >= n_bytes:
            break
    docs.append("Ça coûte 12 € — «naïve» Съешь ещё 日本語のテキスト 🙂👩‍💻 नमस्ते\n" * 20)
    return docs


@pytest.fixture(scope="module")
def hf_json() -> dict:
    """A GPT-2 style byte-level BPE trained by the `tokenizers` library itself."""
    from tokenizers import decoders, models, pre_tokenizers, trainers

    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1500,
        min_frequency=2,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(documents(400_000), trainer)
    return json.loads(hf.to_str())


@pytest.fixture(scope="module")
def held_out() -> list[str]:
    return documents(600_000, skip=60)


def hf_ids(data: dict, texts: list[str]) -> list[list[int]]:
    hf = tokenizers.Tokenizer.from_str(json.dumps(data))
    return [e.ids for e in hf.encode_batch(texts)]


def test_byte_alphabet_is_gpt2s():
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = byte_alphabet()
    assert sorted(alphabet) == sorted(ByteLevel.alphabet())
    assert alphabet[ord(" ")] == "Ġ" and alphabet[ord("\n")] == "Ċ" and alphabet[ord("a")] == "a"


def test_hf_import_matches_tokenizers(hf_json, held_out, tmp_path):
    expected = hf_ids(hf_json, held_out)
    (tmp_path / "tokenizer.json").write_text(json.dumps(hf_json), encoding="utf-8")
    tok = load_tokenizer(tmp_path)
    assert isinstance(tok, Tokenizer) and tok.pattern == GPT2_PATTERN
    assert tok.encode_batch(held_out) == expected
    assert [tok.encode_reference(t) for t in held_out] == expected
    assert tok.decode(expected[-1]) == held_out[-1]
    # specials keep their ids, and nothing is added past the vocabulary
    assert tok.special_tokens == {"<|endoftext|>": 0, "<pad>": 1} and tok.vocab_size == 1500
    assert tok.eot_id == 0
    # the tokenizers library always splits out added tokens; we do when allowed
    text = "a<|endoftext|>b<pad>c"
    assert tok.encode(text, allowed_special="all") == hf_ids(hf_json, [text])[0]
    assert 0 not in tok.encode(text)
    # saved in groklm's format and loaded back: same ids
    tok.save(tmp_path / "ours")
    assert load_tokenizer(tmp_path / "ours").encode_batch(held_out[:5]) == expected[:5]


def test_hf_import_with_ids_out_of_merge_order(hf_json, held_out):
    """Ids need not follow merge priority: ranks drive tiktoken, a lookup gives the ids."""
    data = json.loads(json.dumps(hf_json))
    ids = sorted(data["model"]["vocab"].values())
    shuffled = ids[:]
    random.Random(0).shuffle(shuffled)
    new_id = dict(zip(ids, shuffled))
    data["model"]["vocab"] = {t: new_id[i] for t, i in data["model"]["vocab"].items()}
    for added in data["added_tokens"]:
        added["id"] = new_id[added["id"]]
    expected = hf_ids(data, held_out)
    tok = from_hf_dict(data)
    assert tok.encode_batch(held_out) == expected
    assert tok.encode(held_out[0]) == expected[0]
    assert [tok.encode_reference(t) for t in held_out[:10]] == expected[:10]
    with pytest.raises(TokenizerError, match="out of merge order"):
        tok.to_tiktoken()


def test_hf_import_rejects_what_it_cannot_reproduce(hf_json):
    data = json.loads(json.dumps(hf_json))
    data["pre_tokenizer"] = {"type": "Whitespace"}
    with pytest.raises(TokenizerError, match="pre-tokenizer"):
        from_hf_dict(data)
    data = json.loads(json.dumps(hf_json))
    data["normalizer"] = {"type": "Lowercase"}
    with pytest.raises(TokenizerError, match="normalizer"):
        from_hf_dict(data)
    data = json.loads(json.dumps(hf_json))
    data["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": r"\p{N}{1,3}+|\D+"}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ],
    }
    with pytest.raises(TokenizerError, match="Oniguruma"):
        from_hf_dict(data)
    data = json.loads(json.dumps(hf_json))
    del data["model"]["vocab"]["Ġ"]
    with pytest.raises(TokenizerError):
        from_hf_dict(data)


def test_tiktoken_file_import(hf_json, held_out, tmp_path):
    """A tiktoken Encoding built in-process (ranks = the HF vocabulary's ids, so single bytes
    are not ranked in byte order, as in OpenAI's files), written as a .tiktoken file."""
    import base64

    alphabet = {c: b for b, c in enumerate(byte_alphabet())}
    ranks = {
        bytes(alphabet[c] for c in token): i
        for token, i in hf_json["model"]["vocab"].items()
        if token not in SPECIALS
    }
    encoding = tiktoken.Encoding("test", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 1500})
    path = tmp_path / "test.tiktoken"
    lines = [f"{base64.b64encode(token).decode()} {rank}" for token, rank in encoding._mergeable_ranks.items()]
    path.write_text("\n".join(lines) + "\n")
    tok = load_tokenizer(path, pattern="gpt2")
    expected = encoding.encode_ordinary_batch(held_out)
    assert tok.encode_batch(held_out) == expected
    assert [tok.encode_reference(t) for t in held_out[:10]] == expected[:10]
    assert tok.to_tiktoken().encode_ordinary(held_out[0]) == expected[0]
    assert tok.decode(expected[0]) == held_out[0]
    assert from_tiktoken_file(path, "gpt2", {"<|endoftext|>": 1500}).encode("x<|endoftext|>", "all") == encoding.encode(
        "x<|endoftext|>", allowed_special="all"
    )


def test_bad_tiktoken_files(tmp_path):
    path = tmp_path / "bad.tiktoken"
    path.write_text("not base64 at all\n")
    with pytest.raises(TokenizerError, match="bad.tiktoken:1"):
        load_tokenizer(path)
    path.write_text("YQ== 0\nYg== 1\n")
    with pytest.raises(TokenizerError, match="single-byte"):
        load_tokenizer(path)


def test_hf_import_split_regex_then_byte_level(held_out):
    """Llama-3 / Qwen style: Split(GPT-4 regex, Isolated) then ByteLevel(use_regex=false)."""
    from tokenizers import Regex, models, pre_tokenizers, trainers

    from groklm.tokenizer import GPT4_PATTERN

    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GPT4_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=800, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    hf.train_from_iterator(documents(200_000), trainer)
    data = json.loads(hf.to_str())
    tok = from_hf_dict(data)
    assert tok.pattern == GPT4_PATTERN
    texts = held_out[:20]
    assert tok.encode_batch(texts) == [e.ids for e in hf.encode_batch(texts)]


# ---- real vocabularies: missing byte tokens, SmolLM's digits, post-processors, conventions ---------

PIECES = [
    "a", "b", "the", "The", " ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", " \n", "\u3000", "\xa0", "0", "1", "7", "42",
    "123456", "3.14", "-", "!", "?!", "'s", "'ll", "(", "){", "é", "ça", "日本", "語", "🙂", "👩‍💻", "\x00", "\x04", "\x1f",
    "\x7f", "²", "٣", "\U00041000", "\U000f0000", "don't", "x1", " 1", "  2", "\n\n3", "\t\t9", "1 2", "word",
]


def random_strings(n: int, seed: int = 0) -> list[str]:
    """Strings made of pieces that stress the pre-split: whitespace runs before digits, control
    characters, characters whose UTF-8 uses bytes a real vocabulary lacks, and emoji."""
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 12))) for _ in range(n)]


def without_bytes(data: dict, missing: list[int]) -> dict:
    """`data` with the byte tokens of `missing` (and every token and merge using them) removed."""
    data = json.loads(json.dumps(data))
    gone = {byte_alphabet()[b] for b in missing}
    model = data["model"]
    model["vocab"] = {t: i for t, i in model["vocab"].items() if not set(t) & gone}
    model["merges"] = [m for m in model["merges"] if not set("".join(m) if isinstance(m, list) else m) & gone]
    return data


MISSING = [4, 6, 0x1F, 0x7F, 0xC0, 0xC1, 0xF1, 0xF3, 0xFF]  # controls, and bytes SmolLM2's vocabulary lacks


def test_missing_byte_tokens_are_dropped_like_tokenizers(hf_json, held_out, tmp_path):
    data = without_bytes(hf_json, MISSING)
    texts = [*random_strings(400), "!\x04!", "\x04\x04ab", "a\x7fb", "x\U00041000y", *held_out[:5]]
    expected = hf_ids(data, texts)
    assert expected[texts.index("!\x04!")] == hf_ids(data, ["!!"])[0]  # neighbours of a dropped byte meet
    tok = from_hf_dict(data)
    assert tok.encode_batch(texts) == expected
    assert [tok.encode(t) for t in texts] == expected
    assert [tok.encode_reference(t) for t in texts] == expected
    for ids in expected[:50]:
        assert isinstance(tok.decode(ids), str)  # decode stays total
    assert tok.decode(tok.encode("a\x04b")) == "ab"
    assert_exports_the_same(tok, texts, tmp_path)


@pytest.mark.parametrize("fuse", [False, True])
def test_missing_byte_tokens_become_unk_when_the_file_names_one(hf_json, fuse, tmp_path):
    data = without_bytes(hf_json, MISSING)
    unk_id = max(data["model"]["vocab"].values()) + 1
    data["model"]["vocab"]["<unk>"] = unk_id
    data["added_tokens"].append({"id": unk_id, "content": "<unk>", "single_word": False, "lstrip": False, "rstrip": False,
                                 "normalized": False, "special": True})
    data["model"].update(unk_token="<unk>", fuse_unk=fuse)
    texts = [*random_strings(300, seed=1), "!\x04\x04!", "a\x04b\x06c"]
    expected = hf_ids(data, texts)
    assert unk_id in expected[-1]
    tok = from_hf_dict(data)
    assert tok.encode_batch(texts) == expected
    assert [tok.encode_reference(t) for t in texts] == expected
    tok.save(tmp_path / "ours")  # the unknown token survives groklm's own file
    assert load_tokenizer(tmp_path / "ours").encode_batch(texts) == expected
    assert_exports_the_same(tok, texts, tmp_path)


def assert_exports_the_same(tok, texts, tmp_path):
    """Written back as a HF tokenizer.json, the vocabulary encodes the same in `tokenizers`."""
    from groklm.interop.hf_tokenizer import write_hf_tokenizer

    write_hf_tokenizer(tok, tmp_path / "hf", 64)
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json"))
    assert [e.ids for e in hf.encode_batch(texts)] == tok.encode_batch(texts)


@pytest.fixture(scope="module")
def smollm_style() -> dict:
    """A BPE with SmolLM2's pre-tokenizer: Digits(individual_digits=True), then ByteLevel."""
    from tokenizers import decoders, models, pre_tokenizers, trainers

    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1200, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    hf.train_from_iterator([*documents(200_000), *random_strings(3000, seed=5)], trainer)
    return json.loads(hf.to_str())


def test_digits_then_byte_level_splits_like_tokenizers(smollm_style, tmp_path):
    from groklm.tokenizer.bpe import SMOLLM_PATTERN

    tok = from_hf_dict(smollm_style)
    assert tok.pattern == SMOLLM_PATTERN
    texts = [*random_strings(3000, seed=2), "a  1", "x\n\n2", " \t 3", "1 2  3   4", "²³", "٣٤"]
    assert tok.encode_batch(texts) == hf_ids(smollm_style, texts)
    assert [tok.encode_reference(t) for t in texts[:500]] == hf_ids(smollm_style, texts[:500])
    # the pre-split alone, on every string: the regex gives exactly the pre-tokenizer's pieces
    import regex

    hf = tokenizers.Tokenizer.from_str(json.dumps(smollm_style))
    alphabet = byte_alphabet()
    for text in texts:
        pieces = [p for p, _ in hf.pre_tokenizer.pre_tokenize_str(text)]
        ours = ["".join(alphabet[b] for b in chunk.encode("utf-8")) for chunk in regex.findall(SMOLLM_PATTERN, text)]
        assert ours == pieces, text
    assert_exports_the_same(tok, texts, tmp_path)


def test_imported_specials_stay_put_and_post_processors_are_recorded(hf_json):
    data = json.loads(json.dumps(hf_json))
    # a post-processor that adds nothing: accepted silently
    data["post_processor"] = {"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0}}],
                              "pair": [], "special_tokens": {}}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok = from_hf_dict(data)
    assert tok.conventions.bos_token is None and tok.conventions.eos_token == "<|endoftext|>"
    # one that adds a BOS: recorded as the convention, not added by encode
    data["post_processor"] = {
        "type": "Sequence",
        "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<pad>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [], "special_tokens": {"<pad>": {"id": "<pad>", "ids": [1], "tokens": ["<pad>"]}}},
        ],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok = from_hf_dict(data)
    assert tok.conventions.bos_token == "<pad>"
    assert tok.encode("hello") == hf_ids({**data, "post_processor": None}, ["hello"])[0]
    # no end-of-text token at all: <|endoftext|> after the last id (a standalone vocabulary)
    data["added_tokens"] = [a for a in data["added_tokens"] if a["content"] != "<|endoftext|>"]
    data["post_processor"] = None
    tok = from_hf_dict(data)
    assert tok.special_tokens == {"<pad>": 1, "<|endoftext|>": 1500} and tok.eot_id == 1500
    # ... but never when the caller names the end token
    tok = from_hf_dict(data, eos_token="<pad>")
    assert tok.special_tokens == {"<pad>": 1} and tok.eot_id == 1 and tok.vocab_size == 1500


def test_own_tokenizers_still_have_the_three_defaults():
    tok = Tokenizer.train("hello world " * 50, 265)
    assert list(tok.special_tokens) == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
