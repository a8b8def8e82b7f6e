"""GGUF export (`groklm export RUN --to gguf OUT.gguf --type f32|f16|q8_0`), checked by two oracles.

transformers' own GGUF loader reads each exported file and must compute our logits (f32 to
1e-4; q8_0's rounding is measured and bounded), and its tokenizer built from the file's
metadata must encode as ours does. `gguf.GGUFReader` shows the metadata llama.cpp reads.
And `groklm import` of the export must give back the same run: the same weights (bit for bit
from f32) and the same token ids. What GGUF cannot hold is refused with nothing written.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers / huggingface_hub are imported
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

from groklm.errors import CheckpointError, ConfigError, TokenizerError  # noqa: E402
from groklm.interop.gguf import unpermute_heads  # noqa: E402
from groklm.interop.gguf_export import CHATML_TEMPLATE, export_gguf, permute_heads  # noqa: E402
from groklm.interop.imports import import_run  # noqa: E402
from groklm.model.rnn import RecurrentLM, RNNConfig  # noqa: E402
from groklm.model.weights import save_weights  # noqa: E402
from groklm.rundir import RunDir  # noqa: E402
from groklm.runs import load  # noqa: E402
from groklm.tokenizer import CharTokenizer, Conventions, Tokenizer  # noqa: E402
from groklm.tokenizer.chat import render_text  # noqa: E402

from helpers.cli import run as cli  # noqa: E402
from helpers.runs import perturbed_run as make_run  # noqa: E402
from helpers.runs import save_run, tiny_run  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

CORPUS = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs!\n"
    "Sphinx of black quartz, judge my vow. naïve café, déjà vu 🙂.\n"
    "def f(x):\n    return x ** 2  # squares\n\n"
) * 8
SAMPLE = "The lazy fox's café: déjà vu 🙂!\n\n    return x<|im_start|>user\nPack<|im_end|>"
TEMPLATE = (  # a template of the model's own (not groklm's ChatML), to see it travel
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + ': ' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant: ' }}{% endif %}"
)
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Pack my box?"}]
LLAMA = dict(pos="rope", norm="rmsnorm", mlp="swiglu", bias=False, n_layer=2, n_head=4, n_kv_head=2, n_embd=64,
             tie_embeddings=False, rope_theta=500.0, norm_eps=1e-6)
# transformers reads gpt2's context_length as n_ctx and keeps n_positions at GPT-2's 1024, so
# its loader accepts a gpt2 GGUF only with 1024 positions (llama.cpp takes any).
GPT2 = dict(pos="learned", norm="layernorm", mlp="gelu", n_layer=2, n_head=4, n_embd=64, block_size=1024)
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def bpe():
    tokenizer = Tokenizer.train(CORPUS, 330, pattern="gpt2")
    return tokenizer.with_conventions(Conventions(eos_token="<|im_end|>", bos_token="<|endoftext|>", chat_template=TEMPLATE))


def hf_from_gguf(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


def max_diff(hf, ours, tokenizer):
    ids = torch.tensor([tokenizer.encode(SAMPLE, allowed_special="all")])
    with torch.no_grad():
        return (hf(ids).logits - ours(ids)[0]).abs().max().item()


def metadata(path):
    reader = gguf.GGUFReader(path)
    return {key: field.contents() for key, field in reader.fields.items()}, {t.name: t.tensor_type.name for t in reader.tensors}


def test_permute_heads_is_what_the_importer_undoes():
    weight = torch.randn(4 * 6, 5)
    assert torch.equal(unpermute_heads(permute_heads(weight, 4), 4), weight)
    assert not torch.equal(permute_heads(weight, 4), weight)


@pytest.mark.parametrize("shape, arch", [(LLAMA, "llama"), ({**LLAMA, "n_kv_head": 4, "tie_embeddings": True}, "llama"),
                                         (GPT2, "gpt2"), ({**GPT2, "n_kv_head": 2, "bias": False}, "gpt2")])
def test_f32_export_gives_our_logits_in_transformers(tmp_path, bpe, shape, arch):
    ours = make_run(tmp_path / "run", bpe, **shape)
    result = export_gguf(tmp_path / "run", tmp_path / "model.gguf", "f32")
    assert result.architecture == arch and set(result.tensor_types) == {"F32"}
    diff = max_diff(hf_from_gguf(tmp_path / "model.gguf"), ours, bpe)
    print(f"{arch} {shape}: f32 max |logit diff| = {diff:.2e}")
    assert diff < TOLERANCE


def test_llama_with_qkv_biases_is_written_as_qwen2(tmp_path, bpe):
    ours = make_run(tmp_path / "run", bpe, **{**LLAMA, "bias": True})
    with torch.no_grad():  # Qwen2's shape: biases on q, k and v only
        for block in ours.blocks:
            for linear in (block.attn.proj, block.mlp.gate, block.mlp.fc, block.mlp.proj):
                linear.bias.zero_()
    save_weights(ours, tmp_path / "run" / "model.safetensors")
    assert export_gguf(tmp_path / "run", tmp_path / "model.gguf").architecture == "qwen2"
    assert max_diff(hf_from_gguf(tmp_path / "model.gguf"), ours, bpe) < TOLERANCE
    back, _, _ = import_run(tmp_path / "model.gguf", tmp_path / "back")
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), back.state_dict().values()))


def test_q8_0_and_f16_are_close_and_small(tmp_path, bpe):
    ours = make_run(tmp_path / "run", bpe, **LLAMA)
    sizes, diffs = {}, {}
    for quant in ("f32", "f16", "q8_0"):
        path = tmp_path / f"model-{quant}.gguf"
        result = export_gguf(tmp_path / "run", path, quant)
        sizes[quant], diffs[quant] = path.stat().st_size, max_diff(hf_from_gguf(path), ours, bpe)
        _, types = metadata(path)
        assert types["blk.0.attn_norm.weight"] == "F32"  # norms stay F32 whatever the type
        assert types["blk.0.ffn_down.weight"] == quant.upper()
        # 16 matrices (7 a block, the embedding, the head) and 5 norms
        assert result.tensor_types == ({"F32": 21} if quant == "f32" else {"F32": 5, quant.upper(): 16})
    print(f"max |logit diff| vs ours: {diffs}; bytes: {sizes}")
    assert diffs["f32"] < TOLERANCE
    assert TOLERANCE < diffs["f16"] < diffs["q8_0"] < 0.1  # rounding shows, and stays small
    assert sizes["q8_0"] < 0.45 * sizes["f32"] and sizes["f16"] < 0.6 * sizes["f32"]


def test_q8_0_falls_back_to_f16_for_rows_not_a_multiple_of_32(tmp_path, bpe):
    make_run(tmp_path / "run", bpe, **{**LLAMA, "n_embd": 48, "n_head": 4, "n_kv_head": 4, "mlp_hidden": 64})
    result = export_gguf(tmp_path / "run", tmp_path / "model.gguf", "q8_0")
    _, types = metadata(tmp_path / "model.gguf")
    assert types["blk.0.attn_q.weight"] == "F16"  # rows of 48 values
    assert types["blk.0.ffn_down.weight"] == "Q8_0"  # rows of 64
    assert any("F16 instead of Q8_0" in note for note in result.notes)


def test_metadata_carries_the_tokenizer_and_chat_template(tmp_path, bpe):
    make_run(tmp_path / "run", bpe, **LLAMA)
    export_gguf(tmp_path / "run", tmp_path / "model.gguf", name="tiny")
    meta, _ = metadata(tmp_path / "model.gguf")
    assert meta["general.architecture"] == "llama" and meta["general.name"] == "tiny"
    assert meta["llama.attention.head_count_kv"] == 2 and meta["llama.rope.freq_base"] == 500.0
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    assert meta["tokenizer.chat_template"] == TEMPLATE
    tokens = meta["tokenizer.ggml.tokens"]
    assert len(tokens) == len(meta["tokenizer.ggml.token_type"]) == bpe.vocab_size
    assert tokens[meta["tokenizer.ggml.eos_token_id"]] == "<|im_end|>"
    assert tokens[meta["tokenizer.ggml.bos_token_id"]] == "<|endoftext|>"
    assert meta["tokenizer.ggml.token_type"][bpe.special_tokens["<|im_start|>"]] == 3  # control
    assert len(meta["tokenizer.ggml.merges"]) == len(bpe.merges)
    assert tokens[ord("a")] == "a" and tokens[ord(" ")] == "Ġ"  # GPT-2's byte alphabet

    # transformers builds its tokenizer from these keys alone, and it encodes as ours does.
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="model.gguf")
    text = SAMPLE.split("<|im_start|>")[0]
    assert hf_tokenizer(text, add_special_tokens=False)["input_ids"] == bpe.encode(text)


def test_import_of_the_export_is_the_same_run(tmp_path, bpe):
    ours = make_run(tmp_path / "run", bpe, **LLAMA)
    export_gguf(tmp_path / "run", tmp_path / "model.gguf")
    back, tokenizer, summary = import_run(tmp_path / "model.gguf", tmp_path / "back")
    assert summary["architecture"] == "llama"
    # the same shape; GGUF stores eps as float32
    assert back.config.to_dict() == {**ours.config.to_dict(), "norm_eps": pytest.approx(1e-6, rel=1e-6)}
    for (name, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name  # f32: bit for bit, q/k permuted and back
    assert tokenizer.encode(SAMPLE, allowed_special="all") == bpe.encode(SAMPLE, allowed_special="all")
    assert tokenizer.decode(bpe.encode(SAMPLE, allowed_special="all")) == SAMPLE
    assert tokenizer.conventions.eos_token == "<|im_end|>" and tokenizer.conventions.bos_token == "<|endoftext|>"
    assert tokenizer.conventions.chat_template == TEMPLATE


def test_gpt2_run_with_padded_embeddings_round_trips_through_groklm_import(tmp_path, bpe):
    """Embedding rows past the tokenizer's vocabulary become unused filler tokens, and a run
    without a chat template of its own gets groklm's ChatML as one."""
    chatml = bpe.with_conventions(Conventions())
    ours = make_run(tmp_path / "run", chatml, vocab_size=bpe.vocab_size + 6, **GPT2)
    result = export_gguf(tmp_path / "run", tmp_path / "model.gguf", "f16")
    assert result.vocab_size == bpe.vocab_size + 6 and any("6 embedding rows" in note for note in result.notes)
    meta, _ = metadata(tmp_path / "model.gguf")
    assert meta["tokenizer.chat_template"] == CHATML_TEMPLATE
    assert meta["tokenizer.ggml.token_type"][-6:] == [5] * 6  # unused
    # eos ends a document; a ChatML reply ends with <|im_end|>, which llama.cpp learns as eot
    assert meta["tokenizer.ggml.eos_token_id"] == bpe.special_tokens["<|endoftext|>"]
    assert meta["tokenizer.ggml.eot_token_id"] == bpe.special_tokens["<|im_end|>"]
    back, tokenizer, _ = import_run(tmp_path / "model.gguf", tmp_path / "back")
    assert tokenizer.encode(SAMPLE, allowed_special="all") == bpe.encode(SAMPLE, allowed_special="all")
    assert render_text(tokenizer, CHAT, add_generation_prompt=True) == render_text(chatml, CHAT, add_generation_prompt=True)
    for (name, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items()):
        # matrices stored as f16 come back as exactly their f16 rounding; norms and biases stay f32
        assert torch.equal(a if a.ndim == 1 else a.half().float(), b), name


def test_default_cl100k_tokenizer_without_chat_tokens_round_trips(tmp_path):
    """groklm's default pre-split (cl100k) is written as llama-bpe; a tokenizer without the ChatML
    tokens gets ChatML spelled as text, replies ended by eos, exactly as groklm renders it."""
    trained = Tokenizer.train(CORPUS, 300)  # pattern gpt4
    plain = Tokenizer([m[:2] for m in trained.merges], pattern="gpt4", special_tokens={"<|endoftext|>": 300})
    assert "<|im_start|>" not in plain.special_tokens
    make_run(tmp_path / "run", plain, **LLAMA)
    result = export_gguf(tmp_path / "run", tmp_path / "model.gguf")
    assert any("llama-bpe" in note for note in result.notes)
    meta, _ = metadata(tmp_path / "model.gguf")
    assert meta["tokenizer.ggml.pre"] == "llama-bpe" and "tokenizer.ggml.eot_token_id" not in meta
    _, tokenizer, _ = import_run(tmp_path / "model.gguf", tmp_path / "back")
    text = SAMPLE.replace("<|im_start|>", "").replace("<|im_end|>", "<|endoftext|>")
    assert tokenizer.encode(text, allowed_special="all") == plain.encode(text, allowed_special="all")
    chat = [*CHAT, {"role": "assistant", "content": "Yes."}]
    assert render_text(tokenizer, chat) == render_text(plain, chat)
    assert render_text(plain, chat).endswith("<|im_start|>assistant\nYes.<|endoftext|>\n")


def test_cli_writes_the_file_and_says_what_it_wrote(tmp_path, bpe, capsys):
    make_run(tmp_path / "run", bpe, **LLAMA)
    out = tmp_path / "out" / "model.gguf"
    code, stdout, _ = cli(capsys, "export", str(tmp_path / "run"), str(out), "--to", "gguf", "--type", "q8_0")
    assert code == 0 and out.is_file()
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # readable by llama.cpp or ollama as other users
    assert "architecture llama, q8_0" in stdout and "16 Q8_0" in stdout
    code, _, err = cli(capsys, "export", str(tmp_path / "run"), str(out), "--to", "gguf", "--dtype", "float16")
    assert code != 0 and "--type" in err
    code, _, err = cli(capsys, "export", str(tmp_path / "run"), str(tmp_path / "hf"), "--to", "hf", "--type", "q8_0")
    assert code != 0 and "--dtype" in err and not (tmp_path / "hf").exists()


# ---- what GGUF cannot hold: refused, nothing written --------------------------------------------


def rnn_run(path, tokenizer):
    model = RecurrentLM(RNNConfig(vocab_size=tokenizer.vocab_size, n_layer=1, n_embd=16, cell="gru"))
    run = RunDir(path)
    run.write_config("pretrain", parent=None, arch="gru", model=model.config.to_dict(), train={}, data={})
    save_weights(model, run.weights_path)
    tokenizer.save(run.tokenizer_dir)
    return path


def untouched(folder, before):
    """Nothing new in `folder` (no .gguf, no temporary file), and what was there unchanged."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("case, error, message", [
    ("rnn", ConfigError, "'gru' model"),
    ("moe", ConfigError, "mixture-of-experts"),
    ("mod", ConfigError, "mixture-of-depths"),
    ("other shape", ConfigError, "Exportable shapes"),
    ("exact gelu", ConfigError, "exact \\(erf\\) GELU"),
    ("o bias", ConfigError, "non-zero bias on blocks.0.attn.proj"),
    ("chars", TokenizerError, "character tokenizer has no GGUF form"),
    ("custom regex", TokenizerError, "custom regex"),
])
def test_what_gguf_cannot_hold_is_refused_and_nothing_is_written(tmp_path, bpe, case, error, message):
    run = tmp_path / "run"
    if case == "rnn":
        rnn_run(run, bpe)
    elif case == "moe":
        tiny_run(run, bpe, moe_experts=4, moe_top_k=2, n_embd=32)
    elif case == "mod":
        tiny_run(run, bpe, mod_capacity=0.25, mod_every=1, n_embd=32)
    elif case == "other shape":
        tiny_run(run, bpe, pos="rope", norm="layernorm", mlp="gelu")
    elif case == "exact gelu":
        tiny_run(run, bpe, **{**GPT2, "mlp": "gelu_exact"})
    elif case == "o bias":
        make_run(run, bpe, **{**LLAMA, "bias": True})
    elif case == "chars":
        tiny_run(run, CharTokenizer(list("abcé ")), n_embd=32, **{k: v for k, v in LLAMA.items() if k != "n_embd"})
    else:
        tiny_run(run, Tokenizer.train(CORPUS, 280, pattern=r"\w+|\s+|[^\w\s]+"), n_embd=32)
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.gguf").write_bytes(b"an earlier good export")
    before = {"model.gguf": b"an earlier good export"}
    with pytest.raises(error, match=message):
        export_gguf(run, out / "model.gguf", "q8_0")
    assert untouched(out, before)


def test_bad_arguments_are_refused_before_any_work(tmp_path, bpe):
    make_run(tmp_path / "run", bpe, **LLAMA)
    with pytest.raises(ConfigError, match="--type must be one of f32, f16, q8_0"):
        export_gguf(tmp_path / "run", tmp_path / "model.gguf", "q4_0")
    with pytest.raises(ConfigError, match=".gguf suffix"):
        export_gguf(tmp_path / "run", tmp_path / "model.bin")
    with pytest.raises(ConfigError, match="is a directory"):
        export_gguf(tmp_path / "run", tmp_path)
    save_run(tmp_path / "bare", load(tmp_path / "run")[0])  # no tokenizer/
    with pytest.raises(CheckpointError, match="has no tokenizer/"):
        export_gguf(tmp_path / "bare", tmp_path / "model.gguf")
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*.tmp"))


# ---- the real SmolLM2-135M-Instruct ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["f32", "q8_0"])
def test_real_smollm2_export_round_trips(tmp_path, quant):
    """The imported SmolLM2 (Q4_1, dequantized) exported again: transformers loads the export and
    computes our logits (f32: 1e-4; q8_0: measured), and `groklm import` of it is the same run."""
    import_run("smollm2-135m-instruct", tmp_path / "smol")
    ours, tokenizer = load(tmp_path / "smol")
    path = tmp_path / f"smol-{quant}.gguf"
    result = export_gguf(tmp_path / "smol", path, quant)
    assert result.architecture == "llama" and result.vocab_size == 49152
    meta, _ = metadata(path)
    assert meta["tokenizer.ggml.pre"] == "smollm"
    assert meta["tokenizer.chat_template"] == tokenizer.conventions.chat_template
    hf = hf_from_gguf(path)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    prompt = "def f(x):\n    return x ** 2  # 12345 café 東京"
    ids = tokenizer.encode(prompt)
    assert hf_tokenizer(prompt, add_special_tokens=False)["input_ids"] == ids
    with torch.no_grad():
        theirs, mine = hf(torch.tensor([ids])).logits[0], ours(torch.tensor([ids]))[0][0]
    diff = (theirs - mine).abs()
    print(f"SmolLM2 {quant}: {path.stat().st_size / 2**20:.0f} MiB, |logit diff| vs ours: max {diff.max():.2e}, "
          f"mean {diff.mean():.2e} (logits' spread {mine.std():.1f})")
    if quant == "f32":
        assert diff.max() < TOLERANCE
    else:  # 8-bit rounding of every matrix: small against the logits, and the same greedy choices
        assert diff.mean() < 0.1 * mine.std() and torch.equal(theirs.argmax(-1), mine.argmax(-1))
    if quant == "f32":
        back, back_tokenizer, _ = import_run(path, tmp_path / "back")
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), back.state_dict().values()))
        assert back_tokenizer.encode(prompt) == ids
        assert back_tokenizer.conventions == tokenizer.conventions
