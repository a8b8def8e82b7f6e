"""GGUF export of SentencePiece-style (metaspace) tokenizers as llama.cpp's `llama` vocabulary.

Three readers check the file: transformers' GGUF loader (its tokenizer gives our ids, its model
our logits), `groklm import` (the same tokenizer and weights back), and `llama_cpp_spm` below,
a small model of llama.cpp's SentencePiece tokenizer, which merges by the file's scores alone
(llama.cpp itself is not installable here; see test_gguf_export.py). Each prefix scheme is
read exactly by some of them, and the export says which; one that none reads is refused.
"""

from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers / huggingface_hub are imported
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from groklm.errors import TokenizerError  # noqa: E402
from groklm.interop.gguf_export import export_gguf  # noqa: E402
from groklm.interop.imports import import_run  # noqa: E402
from groklm.tokenizer import MetaspaceTokenizer  # noqa: E402
from groklm.tokenizer.imports import from_gguf_vocab, from_hf_dict  # noqa: E402
from groklm.tokenizer.metaspace import SPACE, byte_token  # noqa: E402

from helpers.runs import perturbed_run, tiny_run  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

CORPUS = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs!\n"
    "Sphinx of black quartz, judge my vow. naïve café, déjà vu.\n"
    "def f(x):\n    return x ** 2  # squares\n\n"
).splitlines() * 20
# Spaces (leading, doubled, trailing), newlines and tabs, characters the vocabulary lacks
# (byte fallback: CJK, emoji, a control character), and the special tokens.
TEXTS = [
    "The quick brown fox", "the lazy dog.", " leading space", "  two leading", "trailing  ", " ", "  ", "",
    "a\nb", "\n\nreturn x", "def f(x):\n    return x ** 2\n", "\ttab\there", "café naïve déjà", "東京 🙂 ꙮ\x01",
    "<s>The fox</s>", "<s> spaced</s>", "word<s>word", "</s></s>", "<unk>?", "▁already", "x▁▁y", "Ünïcödé ЖΩ",
]
SAMPLE = "<s>The lazy fox's café: déjà vu 東京🙂!\n\n    return x</s>"
LLAMA = dict(pos="rope", norm="rmsnorm", mlp="swiglu", bias=False, n_layer=2, n_head=4, n_kv_head=2, n_embd=64,
             tie_embeddings=False, rope_theta=10000.0, norm_eps=1e-5)
TOLERANCE = 1e-4
FILLERS = 3  # embedding rows past the vocabulary


def train(scheme: str) -> MetaspaceTokenizer:
    """A small SentencePiece-style BPE, imported from the tokenizer.json that `tokenizers` writes:
    "normalizer" is Llama 2's Prepend + Replace, the others a Metaspace pre-tokenizer."""
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

    hf = tokenizers.Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if scheme == "normalizer":
        hf.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
    else:
        hf.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme=scheme, split=False)
    hf.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    trainer = trainers.BpeTrainer(vocab_size=360, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=60,
                                  show_progress=False)
    hf.train_from_iterator(CORPUS, trainer)
    data = json.loads(hf.to_str())
    vocab = data["model"]["vocab"]
    for b in range(256):  # the byte tokens, which SentencePiece always has
        vocab.setdefault(byte_token(b), len(vocab))
    return from_hf_dict(data, eos_token="</s>", bos_token="<s>")


@pytest.fixture(scope="module")
def first():
    return train("first")


def make_run(path, tokenizer, seed=0):
    """A tiny llama run with weights perturbed away from their init, and unused embedding rows."""
    return perturbed_run(path, tokenizer, seed=seed, vocab_size=tokenizer.vocab_size + FILLERS, **LLAMA)


def metadata(path):
    return {key: field.contents() for key, field in gguf.GGUFReader(path).fields.items()}


def llama_cpp_spm(meta: dict, text: str) -> list[int]:
    """llama.cpp's SentencePiece tokenizer on a text without special tokens, from the file's
    keys: "▁" before the text if add_space_prefix, spaces as "▁", one symbol per character,
    then repeatedly join the adjacent pair whose joined text is the highest-scoring token
    (leftmost on a tie); a symbol that is no token becomes its byte tokens. An empty text has no
    fragment to tokenize, so no prefix either."""
    if not text:
        return []
    tokens, scores = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.scores"]
    ids = {token: i for i, token in enumerate(tokens)}
    if meta["tokenizer.ggml.add_space_prefix"]:
        text = " " + text
    symbols = list(text.replace(" ", SPACE))
    while True:
        pairs = [(scores[ids[a + b]], -i) for i, (a, b) in enumerate(zip(symbols, symbols[1:])) if a + b in ids]
        if not pairs:
            break
        i = -max(pairs)[1]
        symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
    out = []
    for symbol in symbols:
        out.extend([ids[symbol]] if symbol in ids else [ids[byte_token(b)] for b in symbol.encode("utf-8")])
    return out


def plain(texts):
    """The texts without special tokens."""
    return [t for t in texts if "<s>" not in t and "</s>" not in t and "<unk>" not in t]


def test_first_scheme_gives_our_ids_and_logits_in_transformers(tmp_path, first):
    ours = make_run(tmp_path / "run", first)
    result = export_gguf(tmp_path / "run", tmp_path / "model.gguf", "f32")
    assert result.architecture == "llama" and result.vocab_size == first.vocab_size + FILLERS
    assert any("transformers and groklm's GGUF import read it exactly" in note for note in result.notes)
    assert any(f"{FILLERS} embedding rows" in note for note in result.notes)

    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="model.gguf")
    theirs = [hf_tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    assert theirs == [first.encode(t, allowed_special="all") for t in TEXTS]
    assert hf_tokenizer.decode(first.encode(SAMPLE, allowed_special="all")) == SAMPLE

    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="model.gguf", dtype=torch.float32).eval()
    ids = torch.tensor([first.encode(SAMPLE, allowed_special="all")])
    with torch.no_grad():
        diff = (hf(ids).logits - ours(ids)[0]).abs().max().item()
    print(f"sentencepiece llama: {len(TEXTS)} texts, ids equal; f32 max |logit diff| = {diff:.2e}")
    assert diff < TOLERANCE


def test_metadata_is_a_llama_vocabulary(tmp_path, first):
    make_run(tmp_path / "run", first)
    export_gguf(tmp_path / "run", tmp_path / "model.gguf")
    meta = metadata(tmp_path / "model.gguf")
    assert meta["tokenizer.ggml.model"] == "llama" and meta["tokenizer.ggml.pre"] == "default"
    assert meta["tokenizer.ggml.add_space_prefix"] is True and meta["tokenizer.ggml.add_bos_token"] is False
    tokens, types, scores = (meta[f"tokenizer.ggml.{key}"] for key in ("tokens", "token_type", "scores"))
    assert len(tokens) == len(types) == len(scores) == first.vocab_size + FILLERS
    word = next(t for t in first.vocab if t.startswith(SPACE) and len(t) > 3)
    assert tokens[first.vocab[word]] == word  # spelled as the tokenizer spells it, "▁" and all
    by_name = dict(zip(tokens, zip(types, scores)))
    assert by_name["<unk>"] == (2, 0.0) and by_name["<s>"] == (3, 0.0) and by_name["</s>"] == (3, 0.0)
    assert by_name[byte_token(0x0A)] == (6, 0.0)
    assert types[-FILLERS:] == [5] * FILLERS and tokens[-1] == f"[PAD{len(tokens) - 1}]"
    # each merge's token scores minus its rank; single characters below every merge
    ranks = [scores[first.vocab[left + right]] for left, right in first.merges]
    assert ranks[:3] == [0.0, -1.0, -2.0] and ranks == sorted(ranks, reverse=True)
    assert by_name["x"] == (1, -float(len(first.merges)))
    assert meta["tokenizer.ggml.merges"] == [f"{left} {right}" for left, right in first.merges]
    assert tokens[meta["tokenizer.ggml.bos_token_id"]] == "<s>" and tokens[meta["tokenizer.ggml.eos_token_id"]] == "</s>"
    assert tokens[meta["tokenizer.ggml.unknown_token_id"]] == "<unk>"


def test_scores_alone_give_our_merge_order(tmp_path, first):
    """llama.cpp reads no merges for a `llama` vocabulary: the scores must order them as ours,
    both for transformers' rule (merges derived from the scores) and for llama.cpp's."""
    make_run(tmp_path / "run", first)
    export_gguf(tmp_path / "run", tmp_path / "model.gguf")
    meta = metadata(tmp_path / "model.gguf")
    from_scores = from_gguf_vocab(
        model="llama", tokens=meta["tokenizer.ggml.tokens"], token_types=meta["tokenizer.ggml.token_type"],
        merges=None, scores=meta["tokenizer.ggml.scores"], pre=None, bos_id=1, eos_id=2, unk_id=0, source="x.gguf")
    words = [w for line in CORPUS[:3] for w in line.split()]
    texts = [*TEXTS, *words]
    assert from_scores.encode_batch(texts, allowed_special="all") == first.encode_batch(texts, allowed_special="all")
    # llama.cpp puts its "▁" before a text that begins with a space (or "▁") too: compare where
    # the schemes agree
    agree = [t for t in plain(texts) if not t.startswith((" ", SPACE))]
    assert [llama_cpp_spm(meta, t) for t in agree] == [first.encode(t) for t in agree]


def test_import_of_the_export_is_the_same_run(tmp_path, first):
    ours = make_run(tmp_path / "run", first)
    export_gguf(tmp_path / "run", tmp_path / "model.gguf")
    back, tokenizer, summary = import_run(tmp_path / "model.gguf", tmp_path / "back")
    assert summary["architecture"] == "llama" and isinstance(tokenizer, MetaspaceTokenizer)
    assert tokenizer.encode_batch(TEXTS, allowed_special="all") == first.encode_batch(TEXTS, allowed_special="all")
    assert tokenizer.decode(first.encode(SAMPLE, allowed_special="all")) == SAMPLE
    assert (tokenizer.conventions.eos_token, tokenizer.conventions.bos_token) == ("</s>", "<s>")
    for (name, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name  # f32: bit for bit
    ids = torch.tensor([first.encode(SAMPLE, allowed_special="all")])
    with torch.no_grad():
        assert torch.equal(back(ids)[0], ours(ids)[0])


def test_llama2_normalizer_scheme_is_llama_cpps_own(tmp_path):
    """Llama 2's Prepend + Replace is what llama.cpp does with add_space_prefix: it reads every
    text as we do. transformers and groklm's import put the "▁" at the very start only, so they
    agree with us except on a text that begins with a space (or "▁") or follows a special token."""
    llama2 = train("normalizer")
    make_run(tmp_path / "run", llama2)
    result = export_gguf(tmp_path / "run", tmp_path / "model.gguf")
    assert any("which llama.cpp reads exactly" in note for note in result.notes)
    meta = metadata(tmp_path / "model.gguf")
    assert meta["tokenizer.ggml.add_space_prefix"] is True
    assert [llama_cpp_spm(meta, t) for t in plain(TEXTS)] == [llama2.encode(t) for t in plain(TEXTS)]
    same = [t for t in plain(TEXTS) if not t.startswith((" ", SPACE))]
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="model.gguf")
    assert [hf_tokenizer(t, add_special_tokens=False)["input_ids"] for t in same] == [llama2.encode(t) for t in same]
    assert hf_tokenizer(" x", add_special_tokens=False)["input_ids"] != llama2.encode(" x")  # "▁x", not "▁▁x"
    _, back, _ = import_run(tmp_path / "model.gguf", tmp_path / "back")
    assert back.encode_batch(same) == llama2.encode_batch(same)


def test_no_prefix_is_add_space_prefix_false(tmp_path):
    never = train("never")
    make_run(tmp_path / "run", never)
    result = export_gguf(tmp_path / "run", tmp_path / "model.gguf")
    assert any("add_space_prefix = false" in note for note in result.notes)
    meta = metadata(tmp_path / "model.gguf")
    assert meta["tokenizer.ggml.add_space_prefix"] is False
    assert [llama_cpp_spm(meta, t) for t in plain(TEXTS)] == [never.encode(t) for t in plain(TEXTS)]
    _, back, _ = import_run(tmp_path / "model.gguf", tmp_path / "back")
    assert back.encode_batch(TEXTS, allowed_special="all") == never.encode_batch(TEXTS, allowed_special="all")


def variant(tokenizer: MetaspaceTokenizer, case: str) -> MetaspaceTokenizer:
    data = tokenizer.to_dict()
    if case == "always":
        data["prefix"] = "always"
    elif case == "split across":  # words cut at "▁", and a merge that joins across one
        data["split"] = True
        data["vocab"][f"s{SPACE}"] = max(data["vocab"].values()) + 1
        data["merges"].append(["s", SPACE])
    elif case == "no byte fallback":
        data["byte_fallback"] = False
    else:  # a byte token missing
        del data["vocab"][byte_token(0x01)]
    return MetaspaceTokenizer.from_dict(data).with_conventions(tokenizer.conventions)


@pytest.mark.parametrize("case, message", [
    ("always", "prepend_scheme 'always'"),
    ("split across", "cuts words before each"),
    ("no byte fallback", "has byte fallback off"),
    ("missing byte", r"lacks 1 of the byte tokens \(e.g. <0x01>\)"),
])
def test_what_llama_cpp_cannot_hold_is_refused_and_nothing_is_written(tmp_path, first, case, message):
    tiny_run(tmp_path / "run", variant(first, case), n_embd=32, **{k: v for k, v in LLAMA.items() if k != "n_embd"})
    with pytest.raises(TokenizerError, match=message):
        export_gguf(tmp_path / "run", tmp_path / "out" / "model.gguf")
    assert not (tmp_path / "out").exists()  # refused before anything was written
