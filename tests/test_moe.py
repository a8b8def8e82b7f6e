"""Mixture of experts: routing respects top-k and capacity, the layer computes what the routing
says, the balancing loss measures balance, and a MoE GPT trains and logs its experts' load."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from groklm.errors import ConfigError
from groklm.model import GPT, GPTConfig
from groklm.model.gpt import MLP
from groklm.model.moe import MoE, active_params, balancing_loss, expert_capacity, route

from helpers.training import quick_pretrain


def moe_config(**overrides) -> GPTConfig:
    values = dict(vocab_size=32, block_size=16, n_layer=1, n_head=2, n_embd=16, moe_experts=4, moe_top_k=2)
    return GPTConfig(**{**values, **overrides})


# ---- routing ---------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(n_tokens=st.integers(1, 40), n_experts=st.integers(1, 6), data=st.data())
def test_routing_respects_top_k_and_capacity(n_tokens, n_experts, data):
    top_k = data.draw(st.integers(1, n_experts))
    factor = data.draw(st.sampled_from([0.0, 0.5, 1.0, 1.25, 2.0]))
    seed = data.draw(st.integers(0, 1000))
    logits = torch.randn(n_tokens, n_experts, generator=torch.Generator().manual_seed(seed)) * 3
    capacity = expert_capacity(n_tokens, n_experts, top_k, factor)
    r = route(logits, top_k, capacity)
    # Every token is assigned to exactly top_k distinct experts: its k most probable ones.
    assert r.expert.numel() == top_k * n_tokens
    for token in range(n_tokens):
        chosen = r.expert[r.token == token]
        assert len(set(chosen.tolist())) == top_k
        assert set(chosen.tolist()) == set(logits[token].topk(top_k).indices.tolist())
        torch.testing.assert_close(r.gate[r.token == token], logits[token].softmax(-1)[chosen])
    # No expert takes more than its capacity, and only overflow is dropped.
    counts = torch.bincount(r.expert[r.keep], minlength=n_experts)
    if capacity is None:
        assert r.keep.all()
    else:
        assert counts.max() <= capacity
        wanted = torch.bincount(r.expert, minlength=n_experts)
        torch.testing.assert_close(counts, wanted.clamp(max=capacity))


def test_queues_fill_in_token_order():
    # Tokens 0-2 prefer expert 0 then 1; tokens 3-5 expert 1 then 0. With room for 3 each, the
    # first three tokens fill both queues and the later three lose even their first choices.
    logits = torch.tensor([[3.0, 2.0, 0.0]] * 3 + [[2.0, 3.0, 0.0]] * 3)
    r = route(logits, top_k=2, capacity=3)
    assert r.token[r.keep].tolist() == [0, 0, 1, 1, 2, 2]
    assert expert_capacity(6, 4, 2, 1.0) == 3 and expert_capacity(6, 4, 2, 0) is None


def test_balancing_loss_is_one_when_even_and_grows_with_collapse():
    uniform = route(torch.zeros(8, 4) + torch.arange(8)[:, None].eq(torch.arange(4) * 2) * 1e-3, 1, None)
    assert balancing_loss(uniform).item() == pytest.approx(1.0, abs=0.01)
    collapsed = route(torch.tensor([[20.0, 0, 0, 0]]).repeat(8, 1), 1, None)
    assert balancing_loss(collapsed).item() == pytest.approx(4.0, abs=0.01)


# ---- the layer -------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [0.0, 0.5])
def test_moe_layer_computes_the_gated_sum_of_its_kept_experts(factor):
    torch.manual_seed(0)
    config = moe_config(moe_capacity_factor=factor)
    layer = MoE(config, lambda: MLP(config)).eval()
    x = torch.randn(2, 5, 16)
    out = layer(x)
    tokens = x.reshape(-1, 16)
    r = route(layer.router(tokens), 2, expert_capacity(10, 4, 2, factor))
    expected = torch.zeros_like(tokens)
    for expert, token, gate, keep in zip(r.expert, r.token, r.gate, r.keep):  # one assignment at a time
        if keep:
            expected[token] += gate * layer.experts[expert](tokens[token])
    torch.testing.assert_close(out.reshape(-1, 16), expected)
    assert (layer.dropped.item() > 0) == (factor == 0.5)
    assert layer.load.sum().item() == pytest.approx(1.0)


def test_one_expert_is_the_dense_mlp():
    torch.manual_seed(0)
    config = moe_config(moe_experts=1, moe_top_k=1, moe_capacity_factor=1.0)
    dense = MLP(config)
    layer = MoE(config, lambda: MLP(config))
    layer.experts[0].load_state_dict(dense.state_dict())
    x = torch.randn(3, 7, 16)
    torch.testing.assert_close(layer(x), dense(x))


def test_dropping_never_lets_a_token_see_later_tokens_of_its_sequence():
    torch.manual_seed(0)
    config = moe_config(moe_capacity_factor=0.5)
    layer = MoE(config, lambda: MLP(config)).eval()
    x = torch.randn(2, 8, 16)
    changed = x.clone()
    changed[1, 5:] = torch.randn(3, 16) * 5  # the end of the last sequence
    torch.testing.assert_close(layer(x)[:, :5], layer(changed)[:, :5])
    torch.testing.assert_close(layer(x)[0], layer(changed)[0])
    assert layer.dropped > 0  # capacity did bind: some later assignments were dropped


# ---- in the GPT ------------------------------------------------------------------------------


def test_moe_gpt_counts_active_parameters_and_adds_the_aux_loss_only_in_training():
    torch.manual_seed(0)
    model = GPT(moe_config(mlp_hidden=32))
    dense = GPT(moe_config(moe_experts=0, mlp_hidden=64))
    per_expert = sum(p.numel() for p in model.blocks[0].mlp.experts[0].parameters())
    assert active_params(model) == model.num_params() - 2 * per_expert
    # Two half-width experts run the dense MLP's weights, plus a router and a second output bias.
    assert active_params(model) == dense.num_params() + 16 * 4 + 16
    idx = torch.randint(0, 32, (2, 16))
    model.train()
    logits, loss = model(idx, idx)
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 32), idx.reshape(-1))
    torch.testing.assert_close(loss, ce + 0.01 * model.blocks[0].mlp.aux_loss)
    model.eval()
    logits, loss = model(idx, idx)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits.reshape(-1, 32), idx.reshape(-1)))


def test_moe_gpt_trains_and_logs_expert_load(tmp_path):
    run, records = quick_pretrain(tmp_path, "moe", moe_experts=4, moe_top_k=1)
    assert records[-1]["val_loss"] < 0.5 * records[0]["loss"]
    last = records[-1]
    assert sum(last[f"moe_load_{e}"] for e in range(4)) == pytest.approx(1.0)
    assert {"moe_aux", "moe_dropped", "val_moe_aux", "val_moe_load_0"} <= set(last)
    saved = json.loads((run / "config.json").read_text())["model"]
    assert (saved["moe_experts"], saved["moe_top_k"]) == (4, 1)
    from groklm.model import load_model

    assert isinstance(load_model(run).blocks[0].mlp, MoE)


def test_moe_settings_are_validated_and_old_configs_still_load():
    with pytest.raises(ConfigError, match="moe_top_k"):
        moe_config(moe_experts=2, moe_top_k=3)
    with pytest.raises(ConfigError, match="moe_experts"):
        moe_config(moe_experts=-1)
    with pytest.raises(ConfigError, match="moe_capacity_factor"):
        moe_config(moe_capacity_factor=-1.0)
    old = {k: v for k, v in GPTConfig(vocab_size=32).to_dict().items() if not k.startswith("moe_")}
    assert GPTConfig.from_dict(old).moe_experts == 0
    assert isinstance(GPT(GPTConfig(vocab_size=32, n_layer=1, n_embd=16, n_head=2)).blocks[0].mlp, MLP)
