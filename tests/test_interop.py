"""Export to and import from Hugging Face transformers, checked against transformers itself.

Every HF model and tokenizer here is tiny, random, and built in the test: nothing is downloaded.
"""

from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: never touch the network
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from groklm.errors import CheckpointError, ConfigError  # noqa: E402
from groklm.interop.hf import export_run, load_hf_model  # noqa: E402
from groklm.interop.imports import import_run  # noqa: E402
from groklm.model.config import GPTConfig  # noqa: E402
from groklm.model.gpt import GPT  # noqa: E402
from groklm.rundir import CONFIG_FILE, TOKENIZER_DIR  # noqa: E402
from groklm.tokenizer import CharTokenizer, Tokenizer, load_tokenizer  # noqa: E402

from helpers.runs import save_run  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*post-processor is ignored")

CORPUS = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs!\n"
    "Sphinx of black quartz, judge my vow. 12345 + 678 = 13023; naïve café, déjà vu, 東京 🙂.\n"
    "def f(x):\n    return x ** 2  # squares\n\n"
) * 8
SAMPLE = "The lazy fox's café: déjà vu 🙂 in 東京!\n\n    return 13023 + x<|endoftext|>Pack"
TOLERANCE = 1e-4

GPT2_SHAPE = dict(pos="learned", norm="layernorm", mlp="gelu")
LLAMA_SHAPE = dict(pos="rope", norm="rmsnorm", mlp="swiglu")


@pytest.fixture(scope="module")
def bpe():
    return Tokenizer.train(CORPUS, 320)


def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Fresh models have unit norm gains and zero biases; make every parameter matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))


def make_run(path, tokenizer, **options):
    """A run directory with a random model: no training needed to test conversions."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=tokenizer.vocab_size + 5, block_size=64, n_layer=2, n_head=4, n_embd=32, **options)
    model = GPT(config).eval()
    perturb(model)
    save_run(path, model, tokenizer)
    return model


def max_logit_diff(hf_model, ours: GPT, ids: torch.Tensor) -> float:
    with torch.no_grad():
        return (hf_model(ids).logits - ours(ids)[0]).abs().max().item()


def random_ids(vocab: int, length: int = 40) -> torch.Tensor:
    return torch.randint(0, vocab, (2, length), generator=torch.Generator().manual_seed(5))


# ---- export ------------------------------------------------------------------------------


EXPORTS = [
    ("GPT2LMHeadModel", dict(GPT2_SHAPE)),
    ("GPT2LMHeadModel", dict(GPT2_SHAPE, bias=False, n_kv_head=2, tie_embeddings=False)),
    ("GPT2LMHeadModel", dict(GPT2_SHAPE, mlp="gelu_exact")),
    ("LlamaForCausalLM", dict(LLAMA_SHAPE, bias=False, n_kv_head=2)),
    ("LlamaForCausalLM", dict(LLAMA_SHAPE, bias=True, tie_embeddings=False, rope_theta=500.0, norm_eps=1e-6)),
]


EXPORT_IDS = ["gpt2", "gpt2-nobias-gqa-untied", "gpt2-exact-gelu", "llama-gqa", "llama-bias-untied"]


@pytest.mark.parametrize("architecture, options", EXPORTS, ids=EXPORT_IDS)
def test_export_loads_in_transformers_with_the_same_logits(tmp_path, bpe, architecture, options):
    ours = make_run(tmp_path / "run", bpe, **options)
    family, note = export_run(tmp_path / "run", tmp_path / "hf")
    assert family == ("gpt2" if architecture.startswith("GPT2") else "llama")
    assert "tokenizer written" in note
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    assert type(hf).__name__ == architecture
    assert hf.config.eos_token_id == bpe.eot_id
    diff = max_logit_diff(hf, ours, random_ids(ours.config.vocab_size))
    print(f"{architecture} {options}: max |logit diff| = {diff:.2e}")
    assert diff < TOLERANCE

    # ... and the tokenizer encodes and decodes like ours.
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    ids = hf_tokenizer(SAMPLE)["input_ids"]
    assert ids == bpe.encode(SAMPLE, allowed_special="all")
    assert hf_tokenizer.decode(ids) == SAMPLE
    assert hf_tokenizer.eos_token_id == bpe.eot_id

    # Import is the inverse: the same function back.
    import_run(tmp_path / "hf", tmp_path / "back")
    back = GPT.from_run(tmp_path / "back")
    assert back.config.mlp == ours.config.mlp
    assert max_logit_diff(hf, back, random_ids(ours.config.vocab_size)) < TOLERANCE


def test_export_bfloat16(tmp_path, bpe):
    make_run(tmp_path / "run", bpe, **LLAMA_SHAPE)
    export_run(tmp_path / "run", tmp_path / "hf", dtype="bfloat16")
    from safetensors import safe_open

    with safe_open(tmp_path / "hf" / "model.safetensors", "pt") as f:
        assert {f.get_tensor(name).dtype for name in f.keys()} == {torch.bfloat16}
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_char_tokenizer_exports_too(tmp_path):
    chars = CharTokenizer.train(CORPUS)
    make_run(tmp_path / "run", chars, **GPT2_SHAPE)
    export_run(tmp_path / "run", tmp_path / "hf")
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "The café 🙂\n  x<|endoftext|>"
    ids = hf_tokenizer(text)["input_ids"]
    assert ids == chars.encode(text, allowed_special="all")
    assert hf_tokenizer.decode(ids) == text


@pytest.mark.parametrize(
    "options",
    [dict(pos="sinusoidal", norm="layernorm", mlp="gelu"), dict(pos="rope", norm="layernorm", mlp="swiglu"),
     dict(pos="learned", norm="layernorm", mlp="swiglu"), dict(pos="rope", norm="rmsnorm", mlp="gelu")],
    ids=["sinusoidal", "rope-layernorm", "learned-swiglu", "rope-gelu"],
)
def test_export_refuses_shapes_hf_cannot_hold(tmp_path, bpe, options):
    make_run(tmp_path / "run", bpe, **options)
    with pytest.raises(ConfigError, match="Exportable shapes: GPT-2 .* Llama"):
        export_run(tmp_path / "run", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


# ---- import ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_tokenizer_dir(tmp_path_factory):
    """A byte-level BPE trained by the `tokenizers` library, saved the way transformers saves."""
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([CORPUS], trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    path = tmp_path_factory.mktemp("hf_tokenizer")
    fast.save_pretrained(path)
    return path


def save_hf(model, tokenizer_dir, path, **kwargs):
    model.save_pretrained(path, **kwargs)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (path / name).write_bytes((tokenizer_dir / name).read_bytes())


def tiny_hf(kind: str, vocab_size: int):
    torch.manual_seed(0)
    if kind == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0
        )
    elif kind == "llama":
        config = transformers.LlamaConfig(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, rope_theta=1000.0, rms_norm_eps=1e-5,
        )
    elif kind == "mistral":
        config = transformers.MistralConfig(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=1, max_position_embeddings=64, sliding_window=64,
        )
    else:  # qwen2: q/k/v biases but none on o_proj or the MLP, tied embeddings
        config = transformers.Qwen2Config(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True,
        )
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    perturb(model)
    return model


@pytest.mark.parametrize("kind", ["gpt2", "llama", "mistral", "qwen2"])
def test_import_matches_transformers_logits_and_tokens(tmp_path, hf_tokenizer_dir, kind):
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(hf_tokenizer_dir)
    vocab = len(hf_tokenizer) + (8 if kind == "gpt2" else 0)  # a padded and an exact vocabulary
    hf = tiny_hf(kind, vocab)
    # Llama in shards, to read an index; the others as one file.
    save_hf(hf, hf_tokenizer_dir, tmp_path / "hf", **({"max_shard_size": "20KB"} if kind == "llama" else {}))
    if kind == "llama":
        assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()

    import_run(tmp_path / "hf", tmp_path / "run")
    ours = GPT.from_run(tmp_path / "run")
    diff = max_logit_diff(hf, ours, random_ids(vocab))
    print(f"import {kind}: max |logit diff| = {diff:.2e}")
    assert diff < TOLERANCE

    tokenizer = load_tokenizer(tmp_path / "run" / TOKENIZER_DIR)
    assert tokenizer.encode(SAMPLE, allowed_special="all") == hf_tokenizer(SAMPLE)["input_ids"]
    # The checkpoint's own tokens only, at their ids: nothing appended past the embedding.
    assert max([tokenizer.vocab_size - 1, *tokenizer.special_tokens.values()]) < vocab
    assert set(tokenizer.special_tokens) == {"<|endoftext|>"}
    assert tokenizer.eot_id == hf_tokenizer.eos_token_id
    config = json.loads((tmp_path / "run" / CONFIG_FILE).read_text())
    assert config["import"]["model_type"] == kind and config["arch"] == "gpt"
    assert (config["stage"], config["parent"]) == ("import", None)

    # An imported tokenizer exports back to an equivalent tokenizer.json.
    export_run(tmp_path / "run", tmp_path / "again")
    again = transformers.AutoTokenizer.from_pretrained(tmp_path / "again")
    assert again(SAMPLE)["input_ids"] == hf_tokenizer(SAMPLE)["input_ids"]


CHAT_TEMPLATE = ("{% for m in messages %}<|endoftext|>{{ m['role'] }}: {{ m['content'] }}{% if m['role'] == 'assistant' %}"
                 "{{ eos_token }}{% endif %}{% endfor %}{% if add_generation_prompt %}<|endoftext|>assistant: {% endif %}")
MY_TEMPLATE = CHAT_TEMPLATE.replace(": ", " says: ")


@pytest.mark.parametrize("where", ["tokenizer_config.json", "chat_template.jinja"])
def test_import_keeps_the_folders_chat_template(tmp_path, hf_tokenizer_dir, where):
    save_hf(tiny_hf("llama", 300), hf_tokenizer_dir, tmp_path / "hf")
    if where == "chat_template.jinja":
        (tmp_path / "hf" / where).write_text(CHAT_TEMPLATE)
    else:
        config = json.loads((tmp_path / "hf" / where).read_text())
        (tmp_path / "hf" / where).write_text(json.dumps({**config, "chat_template": CHAT_TEMPLATE}))
    _, tokenizer, _ = import_run(tmp_path / "hf", tmp_path / "run")
    assert tokenizer.conventions.chat_template == CHAT_TEMPLATE
    assert load_tokenizer(tmp_path / "run" / TOKENIZER_DIR).conventions.chat_template == CHAT_TEMPLATE
    # --chat-template FILE replaces it.
    (tmp_path / "mine.jinja").write_text(MY_TEMPLATE)
    _, tokenizer, _ = import_run(tmp_path / "hf", tmp_path / "run2", chat_template=tmp_path / "mine.jinja")
    assert tokenizer.conventions.chat_template == MY_TEMPLATE
    with pytest.raises(ConfigError, match="cannot read the chat template"):
        import_run(tmp_path / "hf", tmp_path / "run3", chat_template=tmp_path / "missing.jinja")


def test_import_bfloat16_stores_bf16_and_the_run_loads(tmp_path, hf_tokenizer_dir):
    hf = tiny_hf("llama", 300)
    save_hf(hf, hf_tokenizer_dir, tmp_path / "hf")
    import_run(tmp_path / "hf", tmp_path / "run", dtype="bfloat16")
    from safetensors import safe_open

    with safe_open(tmp_path / "run" / "model.safetensors", "pt") as f:
        assert {f.get_tensor(name).dtype for name in f.keys()} == {torch.bfloat16}
    ids = random_ids(300)
    diff = max_logit_diff(hf, GPT.from_run(tmp_path / "run"), ids)
    assert 0 < diff < 0.1  # bf16 rounding of the weights: close, not equal
    config = json.loads((tmp_path / "run" / CONFIG_FILE).read_text())
    assert (config["import"]["format"], config["import"]["dtype"]) == ("hf", "bfloat16")


def test_import_hf_name_downloads_only_config_tokenizer_and_safetensors(tmp_path, hf_tokenizer_dir, monkeypatch):
    import fnmatch

    import huggingface_hub

    save_hf(tiny_hf("llama", 300), hf_tokenizer_dir, tmp_path / "hf")
    calls = []

    def fake_download(repo_id, allow_patterns):  # what the Hub would put in the cache
        calls.append(repo_id)
        for name in ("model.safetensors", "pytorch_model.bin", "tokenizer.json", "onnx/model.onnx", "config.json"):
            assert any(fnmatch.fnmatch(name, p) for p in allow_patterns) == name.endswith((".safetensors", ".json")), name
        return str(tmp_path / "hf")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    import_run("hf:org/tiny", tmp_path / "run")
    assert calls == ["org/tiny"]
    config = json.loads((tmp_path / "run" / CONFIG_FILE).read_text())
    assert (config["import"]["source"], config["import"]["format"]) == ("hf:org/tiny", "hf")


def test_import_block_size_keeps_a_shorter_context(tmp_path, hf_tokenizer_dir):
    hf = tiny_hf("gpt2", 300)
    save_hf(hf, hf_tokenizer_dir, tmp_path / "hf")
    model, _, _ = import_run(tmp_path / "hf", tmp_path / "run", block_size=16)
    assert model.config.block_size == 16 and model.wpe.weight.shape[0] == 16
    ids = random_ids(300, length=16)
    assert max_logit_diff(hf, model, ids) < TOLERANCE
    with pytest.raises(ConfigError, match="positions"):
        import_run(tmp_path / "hf", tmp_path / "run2", block_size=65)


def test_import_errors_are_clear(tmp_path, hf_tokenizer_dir):
    hf = tiny_hf("gpt2", 300)
    good = tmp_path / "hf"
    save_hf(hf, hf_tokenizer_dir, good)
    import_run(good, tmp_path / "run")
    with pytest.raises(ConfigError, match="already holds a run; pass --force"):
        import_run(good, tmp_path / "run")
    import_run(good, tmp_path / "run", force=True)

    with pytest.raises(CheckpointError, match="nowhere does not exist: import takes a .gguf file, a Hugging Face model folder"):
        import_run(tmp_path / "nowhere", tmp_path / "r0")

    config = json.loads((good / "config.json").read_text())

    def variant(name: str, **changes) -> object:
        path = tmp_path / name
        path.mkdir()
        for item in good.iterdir():
            (path / item.name).write_bytes(item.read_bytes())
        (path / "config.json").write_text(json.dumps({**config, **changes}))
        return path

    with pytest.raises(ConfigError, match="model_type='bert'"):
        import_run(variant("bert", model_type="bert"), tmp_path / "r1")
    with pytest.raises(ConfigError, match="activation"):
        import_run(variant("relu", activation_function="relu"), tmp_path / "r2")

    no_tokenizer = variant("no_tokenizer")
    (no_tokenizer / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        import_run(no_tokenizer, tmp_path / "r3")

    pickled = variant("pickled")
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle"):
        import_run(pickled, tmp_path / "r4")

    truncated = variant("truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        import_run(truncated, tmp_path / "r5")

    too_small = variant("too_small", vocab_size=100)
    with pytest.raises(CheckpointError, match="uses token id 299, but the model has only 100 embeddings"):
        import_run(too_small, tmp_path / "r6")

    for name in ("r1", "r2", "r3", "r4", "r5", "r6"):
        assert not (tmp_path / name / CONFIG_FILE).exists()


def test_llama_variants_we_cannot_run_are_refused(tmp_path):
    base = dict(model_type="llama", vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=4, max_position_embeddings=64)
    from groklm.interop.hf import gpt_config_from_hf

    assert gpt_config_from_hf(base).pos == "rope"
    scaled = dict(base, rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0})
    with pytest.raises(ConfigError, match="llama3"):
        gpt_config_from_hf(scaled)
    with pytest.raises(ConfigError, match="sliding-window"):
        gpt_config_from_hf(dict(base, model_type="mistral", sliding_window=16))
    assert gpt_config_from_hf(dict(base, model_type="mistral", sliding_window=16), block_size=16).block_size == 16
    with pytest.raises(ConfigError, match="head_dim"):
        gpt_config_from_hf(dict(base, head_dim=16))


def test_load_hf_model_reads_unprefixed_gpt2_names(tmp_path):
    # The original GPT-2 release names tensors "h.0.attn..." without the "transformer." prefix.
    from safetensors.torch import load_file, save_file

    hf = tiny_hf("gpt2", 64)
    hf.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    save_file({k.removeprefix("transformer."): v for k, v in tensors.items()}, tmp_path / "model.safetensors")
    assert max_logit_diff(hf, load_hf_model(tmp_path), random_ids(64)) < TOLERANCE
