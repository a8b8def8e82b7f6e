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
    # specials keep their ids; ours are added after the vocabulary
    assert tok.special_tokens["<|endoftext|>"] == 0 and tok.special_tokens["<pad>"] == 1
    assert tok.special_tokens["<|im_start|>"] == 1500
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
