"""Weight-only quantization (groklm/model/quantize.py): the kernels multiply by the weights the
packing describes, the rounding stays within half a step, and a quantized model generates
through the engine the way its float model does, up to that rounding."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from groklm.errors import ConfigError
from groklm.infer.engine import Engine, SamplingParams
from groklm.model import GPT, GPTConfig
from groklm.model.lora import apply_lora
from groklm.model.quantize import INT4_GROUP, QuantizedLinear, pack_int4, pack_int8, quantize_weights

from helpers.cli import run
from helpers.runs import ASCII, char_tokenizer, perturbed_run


def linear(rows: int, cols: int, seed: int = 0, bias: bool = False) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(cols, rows, bias=bias)
    with torch.no_grad():
        layer.weight.normal_(0, 0.05)
        if bias:
            layer.bias.normal_(0, 0.05)
    return layer


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_the_kernel_multiplies_by_the_packed_weight(kind):
    layer = linear(96, 64, bias=True)
    quantized = QuantizedLinear(layer, kind)
    x = torch.randn(3, 5, 64)
    expected = x @ quantized.dequantized().T + layer.bias
    got = quantized(x)
    assert got.shape == (3, 5, 96) and got.dtype == torch.float32
    # bfloat16 activations inside the kernel: about 3 significant digits
    assert torch.allclose(got, expected, atol=2e-2 * expected.abs().max().item())


def test_int8_rounds_each_row_to_within_half_a_step():
    weight = linear(48, 64).weight.detach()
    packed, scales = pack_int8(weight)
    assert packed.dtype == torch.int8 and packed.abs().amax(dim=1).min() >= 126  # each row spans the range
    step = scales.float()[:, None]
    error = (weight - packed.float() * step).abs()
    assert (error <= step / 2 * 1.01 + 1e-6).all()


def test_int4_recovers_weights_that_lie_on_a_16_level_grid():
    """A Q4_1-style weight (16 levels between each group's minimum and maximum) comes back to
    within the bfloat16 rounding of its scale and zero, where float weights move by up to half a step."""
    torch.manual_seed(0)
    rows, cols = 32, 4 * INT4_GROUP
    levels = torch.randint(0, 16, (rows, cols // INT4_GROUP, INT4_GROUP))
    levels[..., 0], levels[..., 1] = 0, 15  # every group spans its whole range
    scale = torch.rand(rows, cols // INT4_GROUP, 1) * 0.01 + 0.001
    low = torch.randn(rows, cols // INT4_GROUP, 1) * 0.05
    weight = (levels * scale + low).view(rows, cols)
    layer = nn.Linear(cols, rows, bias=False)
    layer.weight.data.copy_(weight)
    recovered = QuantizedLinear(layer, "int4").dequantized()
    assert (recovered - weight).abs().max() < 0.02 * weight.abs().max()
    packed, scales_and_zeros = pack_int4(weight)
    assert scales_and_zeros.shape == (cols // INT4_GROUP, rows, 2)

    noisy = weight + torch.randn_like(weight) * 0.003
    layer.weight.data.copy_(noisy)
    moved = (QuantizedLinear(layer, "int4").dequantized() - noisy).abs()
    assert moved.max() <= (scale.max() * 2 / 2) * 1.5  # half of a (wider) step, plus bfloat16 rounding


@pytest.fixture(scope="module")
def gpt_and_tokenizer():
    tokenizer = char_tokenizer(ASCII)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=2, n_head=4, n_kv_head=2,
                          n_embd=64, pos="rope", norm="rmsnorm", mlp="swiglu", bias=False)).eval()
    return model, tokenizer


def quantized_copy(model: GPT, kind: str) -> tuple[GPT, int]:
    copy = GPT(model.config).eval()
    copy.load_state_dict(model.state_dict())
    return copy, quantize_weights(copy, kind)


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_a_quantized_model_stays_close_to_its_float_model(gpt_and_tokenizer, kind):
    model, tokenizer = gpt_and_tokenizer
    quantized, count = quantized_copy(model, kind)
    assert count == 2 * 5 + 1  # qkv, proj, gate, fc, proj per block, and the head
    assert not any(isinstance(m, nn.Linear) for m in quantized.modules())
    assert quantized.lm_head.kind == "int8"  # the head keeps 8 bits even in int4
    assert all(not p.requires_grad for p in quantized.parameters())
    ids = torch.tensor([tokenizer.encode("The quick brown fox jumps over the lazy dog.")])
    with torch.no_grad():
        reference = model(ids)[0].log_softmax(-1)
        approximate = quantized(ids)[0].log_softmax(-1)
    kl = (reference.exp() * (reference - approximate)).sum(-1).mean()
    assert 0 < kl < 1e-3  # rounded, so not identical, but close


def test_the_engine_decodes_a_quantized_model_with_its_cache(gpt_and_tokenizer):
    """Cached decoding equals a full forward pass on the same quantized weights, token for token."""
    model, tokenizer = gpt_and_tokenizer
    quantized, _ = quantized_copy(model, "int8")
    prompt = tokenizer.encode("Once upon a time")
    engine = Engine(quantized, tokenizer, max_batch=2)
    [reply] = engine.generate([prompt], SamplingParams(max_tokens=12, temperature=0))
    ids = list(prompt)
    with torch.no_grad():
        for _ in reply.token_ids:
            ids.append(int(quantized(torch.tensor([ids]))[0][0, -1].argmax()))
    assert reply.token_ids == ids[len(prompt):]


def test_what_cannot_be_quantized_is_refused(gpt_and_tokenizer):
    model, _ = gpt_and_tokenizer
    with pytest.raises(ConfigError, match="int8, int4"):
        quantize_weights(GPT(model.config), "int2")
    torch.manual_seed(0)
    odd = GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=1, n_head=2, n_embd=40))
    with pytest.raises(ConfigError, match="groups of 32.*use int8"):
        quantize_weights(odd, "int4")
    assert quantize_weights(odd, "int8") == 5  # qkv, proj, fc, proj and the head
    adapted = GPT(model.config)
    apply_lora(adapted, rank=2)
    with pytest.raises(ConfigError, match="merge them first"):
        quantize_weights(adapted, "int8")


def test_serve_and_chat_refuse_an_unknown_quantization(tmp_path, capsys):
    perturbed_run(tmp_path / "run", n_embd=32, n_head=2)
    for command in ("serve", "chat"):
        code, _, err = run(capsys, command, str(tmp_path / "run"), "--quantize", "fp3")
        assert code != 0 and "int8, int4" in err and "Traceback" not in err


def test_an_engine_loads_a_run_quantized(tmp_path):
    perturbed_run(tmp_path / "run", n_embd=64, n_head=2, pos="rope", norm="rmsnorm", mlp="swiglu")
    engine = Engine.from_run(tmp_path / "run", quantize="int4")
    assert {m.kind for m in engine.model.modules() if isinstance(m, QuantizedLinear)} == {"int4", "int8"}
    [reply] = engine.generate([engine.tokenizer.encode("Hello")], SamplingParams(max_tokens=5, temperature=0))
    assert reply.completion_tokens >= 1
