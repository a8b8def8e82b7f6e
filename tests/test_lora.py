"""LoRA (groklm/model/lora.py): the same function as PEFT's LoRA, before and after training,
merging that changes nothing, a frozen base, adapter-only saving, and clear errors.

PEFT is the oracle: a tiny Llama built in transformers and the same network built as our GPT
(identical weights, mapped as `groklm import` maps them), both given the same random, non-zero
adapters. A zero-initialised B would make any formula look right, so every comparison starts
from random A and B."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from groklm.errors import CheckpointError, ConfigError
from groklm.interop.hf import gpt_config_from_hf, state_dict_from_hf
from groklm.model import GPT, GPTConfig
from groklm.model.gpt import next_token_loss
from groklm.model.lora import (
    LoRALinear,
    apply_lora,
    base_state_dict,
    load_lora_state_dict,
    lora_disabled,
    lora_layers,
    lora_state_dict,
    merge_lora,
)

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

VOCAB = 96
TOLERANCE = 1e-5

# Our layer and part -> the module PEFT wraps in a Hugging Face Llama.
HF_PROJECTION = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
                 "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}


def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Fresh models have unit norm gains; make every parameter matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))


def tiny_llama_pair() -> tuple[torch.nn.Module, GPT]:
    """The same random Llama (grouped-query attention, SwiGLU, untied head) in transformers and as our GPT."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rope_theta=1000.0, rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    hf = transformers.LlamaForCausalLM(config).eval()
    perturb(hf)
    ours = GPT(gpt_config_from_hf(config.to_dict()))
    ours.load_state_dict(state_dict_from_hf(hf.state_dict(), ours.config, "llama"))
    return hf, ours.eval()


def randomize_adapters(model: torch.nn.Module, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in lora_state_dict(model).values():
            tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))


def copy_adapters_to_peft(ours: GPT, peft_model) -> int:
    """Give PEFT's adapters our A and B; returns how many adapters were copied."""
    hf = peft_model.base_model.model
    copied = 0
    for name, layer in lora_layers(ours).items():
        block = name.split(".")[1]
        for part in layer.lora_A:
            target = hf.get_submodule(f"model.layers.{block}.{HF_PROJECTION[part]}")
            with torch.no_grad():
                target.lora_A["default"].weight.copy_(layer.lora_A[part])
                target.lora_B["default"].weight.copy_(layer.lora_B[part])
            copied += 1
    return copied


def ids(batch: int = 3, length: int = 24, seed: int = 5) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def max_diff(peft_model, ours: GPT, tokens: torch.Tensor) -> float:
    with torch.no_grad():
        return (peft_model(tokens).logits - ours(tokens)[0]).abs().max().item()


def tiny_gpt(**options) -> GPT:
    torch.manual_seed(0)
    config = dict(vocab_size=VOCAB, block_size=32, n_layer=2, n_head=4, n_embd=32)
    model = GPT(GPTConfig(**(config | options))).eval()
    perturb(model)
    return model


# ---- parity with PEFT ------------------------------------------------------------------------


@pytest.mark.parametrize("targets, hf_targets", [
    (("attn", "mlp"), ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    (("q", "v"), ["q_proj", "v_proj"]),  # parts of the fused qkv matrix only: k must stay untouched
    (("k", "down"), ["k_proj", "down_proj"]),
], ids=["all", "q-v", "k-down"])
def test_forward_and_training_match_peft(targets, hf_targets):
    hf, ours = tiny_llama_pair()
    peft_model = peft.get_peft_model(
        hf, peft.LoraConfig(r=4, lora_alpha=12, lora_dropout=0.0, target_modules=hf_targets)
    ).eval()
    apply_lora(ours, rank=4, alpha=12, targets=targets)
    randomize_adapters(ours)
    copied = copy_adapters_to_peft(ours, peft_model)
    assert copied == len(hf_targets) * ours.config.n_layer
    tokens = ids()
    diff = max_diff(peft_model, ours, tokens)
    print(f"{targets}: max |logit diff| with random adapters = {diff:.2e}")
    assert diff < TOLERANCE
    with torch.no_grad():  # the adapters matter: without them the logits are different
        with lora_disabled(ours):
            assert (ours(tokens)[0] - peft_model(tokens).logits).abs().max() > 100 * TOLERANCE

    # A few optimiser steps on the same data: the adapters move the same way in both.
    def trainable(model):
        return [p for p in model.parameters() if p.requires_grad]

    assert sum(p.numel() for p in trainable(ours)) == sum(p.numel() for p in trainable(peft_model))
    ours_opt = torch.optim.AdamW(trainable(ours), lr=1e-2)
    peft_opt = torch.optim.AdamW(trainable(peft_model), lr=1e-2)
    for step in range(4):
        batch = ids(seed=100 + step)
        x, y = batch[:, :-1], batch[:, 1:]
        _, loss = ours(x, y)
        loss.backward()
        next_token_loss(peft_model(x).logits, y).backward()
        for opt in (ours_opt, peft_opt):
            opt.step()
            opt.zero_grad()
    diff = max_diff(peft_model, ours, tokens)
    print(f"{targets}: max |logit diff| after 4 AdamW steps = {diff:.2e}")
    assert diff < TOLERANCE


# ---- merging ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [
    dict(pos="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2, bias=False),
    dict(pos="learned", norm="layernorm", mlp="gelu"),
], ids=["llama", "gpt2"])
def test_merged_model_equals_the_adapted_one_and_is_plain_again(shape):
    model = tiny_gpt(**shape)
    names_before = set(model.state_dict())
    apply_lora(model, rank=4, alpha=8)
    randomize_adapters(model)
    tokens = ids(length=20)
    with torch.no_grad():
        adapted = model(tokens)[0]
        merge_lora(model)
        merged = model(tokens)[0]
    assert (adapted - merged).abs().max().item() < TOLERANCE
    assert not lora_layers(model)
    assert all(type(m) is not LoRALinear for m in model.modules())
    assert set(model.state_dict()) == names_before  # saved and loaded like any model of this config
    assert all(p.requires_grad for p in model.parameters())


def test_merge_of_a_bfloat16_base_rounds_once():
    model = tiny_gpt(pos="rope", norm="rmsnorm", mlp="swiglu")
    model.to(torch.bfloat16)
    apply_lora(model, rank=2, alpha=4)
    layer = model.blocks[0].attn.qkv
    assert layer.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in lora_state_dict(model).values())  # adapters in float32
    randomize_adapters(model)
    expected = (layer.weight.float() + layer.delta_weight()).to(torch.bfloat16)
    with torch.no_grad():
        logits = model(ids(length=8))[0]
    assert logits.dtype == torch.bfloat16
    merge_lora(model)
    assert torch.equal(model.blocks[0].attn.qkv.weight, expected)


# ---- what trains and what is saved ------------------------------------------------------------


def test_a_fresh_adapter_changes_nothing_and_only_the_adapters_get_gradients():
    model = tiny_gpt(pos="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2)
    tokens = ids(length=16)
    with torch.no_grad():
        before = model(tokens)[0]
    wrapped = apply_lora(model, rank=4, alpha=8)
    assert wrapped == sorted(f"blocks.{i}.{layer}" for i in range(2)
                             for layer in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.gate", "mlp.proj"))
    with torch.no_grad():
        assert torch.equal(model(tokens)[0], before)  # B starts at zero: exactly the base model

    model.train()
    _, loss = model(tokens[:, :-1], tokens[:, 1:])
    loss.backward()
    for name, param in model.named_parameters():
        if ".lora_" in name:
            assert param.requires_grad
            if ".lora_B." in name:  # A's gradient goes through B = 0; B's through the random A
                assert param.grad is not None and param.grad.abs().max() > 0, name
        else:
            assert not param.requires_grad and param.grad is None, name


def test_adapter_state_dict_is_small_and_round_trips(tmp_path):
    model = tiny_gpt(n_embd=128, pos="rope", norm="rmsnorm", mlp="swiglu")
    base = {name: t.clone() for name, t in model.state_dict().items()}
    apply_lora(model, rank=4, alpha=8, targets="attn,mlp")
    randomize_adapters(model)
    adapters = lora_state_dict(model)
    adapter_numel = sum(t.numel() for t in adapters.values())
    model_numel = sum(t.numel() for t in base.values())
    print(f"adapters: {adapter_numel} numbers, model: {model_numel} ({adapter_numel / model_numel:.1%})")
    assert adapter_numel < model_numel / 10
    assert base_state_dict(model).keys() == base.keys()

    save_file(adapters, tmp_path / "adapters.safetensors")
    fresh = tiny_gpt(n_embd=128, pos="rope", norm="rmsnorm", mlp="swiglu")  # the same base again
    apply_lora(fresh, rank=4, alpha=8, targets="attn,mlp")
    load_lora_state_dict(fresh, load_file(tmp_path / "adapters.safetensors"))
    tokens = ids(length=16)
    with torch.no_grad():
        assert torch.equal(fresh(tokens)[0], model(tokens)[0])

    other_rank = tiny_gpt(n_embd=128, pos="rope", norm="rmsnorm", mlp="swiglu")
    apply_lora(other_rank, rank=2, alpha=8, targets="attn,mlp")
    with pytest.raises(CheckpointError, match="of another shape.*rank and targets"):
        load_lora_state_dict(other_rank, adapters)
    fewer = tiny_gpt(n_embd=128, pos="rope", norm="rmsnorm", mlp="swiglu")
    apply_lora(fewer, rank=4, alpha=8, targets="attn")
    with pytest.raises(CheckpointError, match="unexpected"):
        load_lora_state_dict(fewer, adapters)
    with pytest.raises(CheckpointError, match="no LoRA adapters"):
        load_lora_state_dict(tiny_gpt(), adapters)


def test_disabled_adapters_give_the_base_model():
    model = tiny_gpt()
    tokens = ids(length=12)
    with torch.no_grad():
        base = model(tokens)[0]
        apply_lora(model, rank=4, alpha=8)
        randomize_adapters(model)
        adapted = model(tokens)[0]
        with lora_disabled(model):
            assert torch.equal(model(tokens)[0], base)
        assert torch.equal(model(tokens)[0], adapted)  # back on after the block
    assert (adapted - base).abs().max() > 1e-3


def test_dropout_reaches_the_adapter_input_only():
    model = tiny_gpt()
    tokens = ids(length=12)
    apply_lora(model, rank=4, alpha=8, dropout=0.5)
    model.train()
    with torch.no_grad():
        base = model(tokens)[0]  # B = 0: dropout on the adapter's input cannot show
        randomize_adapters(model)
        first, second = model(tokens)[0], model(tokens)[0]
        model.eval()
        assert torch.equal(model(tokens)[0], model(tokens)[0])
    assert (first - second).abs().max() > 1e-4  # a new dropout mask each pass while training
    with torch.no_grad(), lora_disabled(model):
        model.train()
        assert torch.equal(model(tokens)[0], base)


# ---- choosing targets -----------------------------------------------------------------------


def test_targets_by_projection_and_by_name_pattern():
    model = tiny_gpt(tie_embeddings=False)
    assert apply_lora(model, rank=2, targets=["v"]) == ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]
    layer = model.blocks[0].attn.qkv
    assert list(layer.lora_A) == ["v"] and layer.lora_B["v"].shape == (32, 2)

    model = tiny_gpt(tie_embeddings=False)
    assert apply_lora(model, rank=2, targets="blocks.1.*,lm_head") == [
        "blocks.1.attn.proj", "blocks.1.attn.qkv", "blocks.1.mlp.fc", "blocks.1.mlp.proj", "lm_head"]
    assert set(model.blocks[1].attn.qkv.lora_A) == {"q", "k", "v"}  # a pattern takes the whole matrix
    assert model.lm_head.lora_B["out"].shape == (VOCAB, 2)

    model = tiny_gpt()
    assert apply_lora(model, rank=2, targets="attn.proj") == ["blocks.0.attn.proj", "blocks.1.attn.proj"]


def test_mixture_of_experts_adapts_every_expert():
    model = tiny_gpt(moe_experts=3, moe_top_k=1)
    wrapped = apply_lora(model, rank=2, targets="mlp")
    assert len(wrapped) == 2 * 3 * 2  # layers x experts x (fc, proj)
    assert all(".experts." in name for name in wrapped)  # the router is no MLP projection


# ---- bad input -------------------------------------------------------------------------------


def test_bad_settings_are_config_errors_that_say_what_to_do():
    with pytest.raises(ConfigError, match="lora_rank must be a whole number >= 1"):
        apply_lora(tiny_gpt(), rank=0)
    with pytest.raises(ConfigError, match=r"lora_rank=40 is larger than blocks.0.attn.qkv \(q\).*lora_rank <= 32"):
        apply_lora(tiny_gpt(), rank=40)
    with pytest.raises(ConfigError, match="'gate' matches no linear layer.*attn, mlp"):
        apply_lora(tiny_gpt(), targets="gate")  # GPT-2's MLP has no gate
    with pytest.raises(ConfigError, match="'decoder.*' matches no linear layer.*blocks.0.attn.qkv"):
        apply_lora(tiny_gpt(), targets=["attn", "decoder.*"])
    with pytest.raises(ConfigError, match="lora_targets is empty"):
        apply_lora(tiny_gpt(), targets=" , ")
    with pytest.raises(ConfigError, match="lora_alpha must be > 0"):
        apply_lora(tiny_gpt(), alpha=0)
    with pytest.raises(ConfigError, match="lora_dropout"):
        apply_lora(tiny_gpt(), dropout=1.0)
    with pytest.raises(ConfigError, match="shared with another layer.*Leave lm_head out"):
        apply_lora(tiny_gpt(tie_embeddings=True), targets="lm_head")

    model = tiny_gpt()
    apply_lora(model, rank=2)
    with pytest.raises(ConfigError, match="already has LoRA adapters"):
        apply_lora(model, rank=2)


def test_a_refused_request_leaves_the_model_untouched():
    model = tiny_gpt()
    with pytest.raises(ConfigError):
        apply_lora(model, rank=2, targets=["attn", "nothing-here"])
    assert not lora_layers(model)
    assert all(p.requires_grad for p in model.parameters())
