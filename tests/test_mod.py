"""Mixture of depths: in training a routed block takes exactly the top k tokens of each sequence,
which attend only among themselves at their own positions, leaves the others untouched and
teaches its router; at inference the predictor routes causally, and cached generation equals
the uncached forward; the FLOPs fall as flops_per_token says; a routed GPT trains."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from groklm.errors import ConfigError
from groklm.infer.decode import generate
from groklm.infer.engine import Engine, SamplingParams
from groklm.model import GPT, GPTConfig, load_model
from groklm.model.depth_router import PREDICTOR_LOSS_WEIGHT, DepthRouter, routed_count
from groklm.model.gpt import Block
from groklm.model.kv_cache import KVCache
from groklm.model.quantize import QuantizedLinear, quantize_weights
from groklm.tokenizer.char import CharTokenizer

from helpers.training import quick_pretrain


def mod_config(**overrides) -> GPTConfig:
    values = dict(vocab_size=40, block_size=32, n_layer=4, n_head=2, n_embd=32, pos="rope", mod_capacity=0.25)
    return GPTConfig(**{**values, **overrides})


def mod_gpt(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(mod_config(**overrides))


def routed_inputs(layer: DepthRouter, run) -> list[torch.Tensor]:
    """The inputs the wrapped block saw while run() ran."""
    seen = []
    handle = layer.block.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    try:
        run()
    finally:
        handle.remove()
    return seen


# ---- one routed block ------------------------------------------------------------------------


@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_training_routes_the_top_k_tokens_through_the_block_attending_only_among_themselves(pos):
    torch.manual_seed(0)
    config = mod_config(pos=pos)
    layer = DepthRouter(config, Block(config)).train()
    x = torch.randn(3, 32, 32)
    [seen] = routed_inputs(layer, lambda: layer(x))
    k = routed_count(0.25, 32)
    assert k == 8 and seen.shape == (3, k, 32)  # exactly k tokens of each sequence
    out = layer(x)
    scores = layer.router(x).squeeze(-1)
    chosen = torch.zeros(3, 32, dtype=torch.bool).scatter(1, scores.topk(k, dim=1).indices, True)
    assert torch.equal(out[~chosen], x[~chosen])  # skipped tokens: bit for bit untouched
    assert not torch.isclose(out[chosen], x[chosen]).all(dim=-1).any()
    # Oracle: the block over the whole sequence, each token allowed to see only chosen earlier
    # tokens (and itself), at its true position; the chosen tokens' deltas, gated, must match.
    causal = torch.ones(32, 32, dtype=torch.bool).tril()
    see = (causal & chosen[:, None, :] | torch.eye(32, dtype=torch.bool)).unsqueeze(1)
    with torch.no_grad():
        delta = layer.block(x, None, see) - x
        expected = x + torch.sigmoid(scores)[..., None] * delta
    torch.testing.assert_close(out[chosen], expected[chosen])


def test_the_router_learns_from_the_loss_and_the_predictor_only_from_its_own():
    torch.manual_seed(0)
    config = mod_config()
    layer = DepthRouter(config, Block(config)).train()
    x = torch.randn(2, 32, 32, requires_grad=True)
    layer(x).pow(2).sum().backward()
    assert layer.router.weight.grad.abs().sum() > 0  # through sigmoid(score), the gate
    assert layer.predictor.weight.grad is None
    layer.zero_grad()
    x.grad = None
    layer(x)
    layer.aux_loss.backward()  # binary cross-entropy against top-k membership, on the detached input
    assert layer.predictor.weight.grad.abs().sum() > 0
    assert layer.router.weight.grad is None and x.grad is None
    assert all(p.grad is None for p in layer.block.parameters())


def test_the_predictor_routes_at_inference_and_nothing_routed_means_the_block_is_skipped():
    torch.manual_seed(0)
    config = mod_config()
    layer = DepthRouter(config, Block(config)).eval()
    x = torch.randn(2, 32, 32)
    routed = layer.predictor(x).squeeze(-1) > 0
    assert routed.any() and not routed.all()
    out = layer(x)
    assert torch.equal(out[~routed], x[~routed])
    assert not torch.isclose(out[routed], x[routed]).all(dim=-1).any()
    with torch.no_grad():
        layer.predictor.bias.fill_(-1e3)
    assert routed_inputs(layer, lambda: torch.equal(layer(x), x)) == []


def test_attention_maps_are_refused_with_a_clear_error():
    model = mod_gpt()
    with pytest.raises(ConfigError, match="mixture-of-depths"):
        model.attention_weights(torch.randint(0, 40, (1, 8)))


# ---- in the GPT ------------------------------------------------------------------------------


def test_every_other_block_is_routed_and_the_predictor_loss_is_added_only_in_training():
    model = mod_gpt()
    assert [isinstance(b, DepthRouter) for b in model.blocks] == [False, True, False, True]
    assert [isinstance(b, DepthRouter) for b in mod_gpt(mod_every=3, n_layer=7).blocks] == [
        False, False, True, False, False, True, False]
    idx = torch.randint(0, 40, (2, 32))
    model.train()
    logits, loss = model(idx, idx)
    ce = F.cross_entropy(logits.reshape(-1, 40), idx.reshape(-1))
    aux = (model.blocks[1].aux_loss + model.blocks[3].aux_loss) / 2
    torch.testing.assert_close(loss, ce + PREDICTOR_LOSS_WEIGHT * aux)
    model.eval()
    logits, loss = model(idx, idx)
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, 40), idx.reshape(-1)))


def test_inference_is_causal_where_training_routing_is_not():
    model = mod_gpt()
    idx = torch.randint(0, 40, (2, 32))
    changed = idx.clone()
    changed[:, 20:] = (idx[:, 20:] + 1) % 40
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(idx)[0][:, :20], model(changed)[0][:, :20])
        # The top-k of training sees the whole sequence: a later token can change an earlier one's route.
        model.train()
        assert not torch.allclose(model(idx)[0][:, :20], model(changed)[0][:, :20])


@pytest.mark.parametrize("options", [dict(), dict(pos="learned", n_kv_head=1), dict(mod_every=1, mod_capacity=0.5)])
def test_cached_generation_equals_the_uncached_eval_forward(options):
    model = mod_gpt(**options).eval()
    idx = torch.randint(0, 40, (2, 32), generator=torch.Generator().manual_seed(1))
    # Some tokens are routed and some skip, in every routed layer: both kinds reach the cache.
    shares = [x.shape[1] for x in routed_inputs(model.blocks[1], lambda: model(idx))]
    assert 0 < shares[0] < 32
    cache = KVCache(model.config, slots=3, page_size=8)
    for slot in (1, 2):
        cache.reserve(slot, 32)
    with torch.no_grad():
        full = model(idx)[0]
        # Rows at different lengths in one pass: slot 1 prefills 11 tokens, then slot 2 joins with 5.
        torch.testing.assert_close(model.forward_cached(idx[:1, :11], cache, [1]), full[0, 10][None])
        torch.testing.assert_close(model.forward_cached(idx[1:, :5], cache, [2]), full[1, 4][None])
        for start in range(5, 11):  # slot 2 catches up, one token at a time
            torch.testing.assert_close(model.forward_cached(idx[1:, start:start + 1], cache, [2]), full[1, start][None])
        for t in range(11, 32):  # then both decode together
            torch.testing.assert_close(model.forward_cached(idx[:, t:t + 1], cache, [1, 2]), full[:, t])


def test_the_engine_generates_what_the_uncached_model_does():
    tokenizer = CharTokenizer(list("abcdefghijklmnopqrstuvwxyz .,"))
    model = mod_gpt(vocab_size=tokenizer.vocab_size, block_size=64).eval()
    engine = Engine(model, tokenizer, max_batch=2)
    for text in ("the cat", "a", "mixture of depths."):
        prompt = tokenizer.encode(text)
        [completion] = engine.generate([prompt], SamplingParams(max_tokens=16, temperature=0))
        reference = generate(model, torch.tensor([prompt]), 16, temperature=0)[0, len(prompt):].tolist()
        stop = next((i for i, t in enumerate(reference) if t in engine.stop_ids), len(reference) - 1)
        assert completion.token_ids == reference[: stop + 1]


def test_packed_rows_at_inference_equal_their_documents_one_by_one():
    model = mod_gpt().eval()
    generator = torch.Generator().manual_seed(2)
    docs = [torch.randint(0, 40, (1, n), generator=generator) for n in (12, 20, 20, 12)]
    idx = torch.cat([torch.cat(docs[:2], dim=1), torch.cat(docs[2:], dim=1)])
    doc_ids = torch.tensor([[0] * 12 + [1] * 20, [0] * 20 + [1] * 12])
    # The rows route different numbers of tokens, so the shorter one is padded in the routed block.
    with torch.no_grad():
        counts = [x.shape[1] for x in routed_inputs(model.blocks[1], lambda: model(idx[:1])) +
                  routed_inputs(model.blocks[1], lambda: model(idx[1:]))]
        assert counts[0] != counts[1]
        packed = model(idx, doc_ids=doc_ids)[0]
        for row, (start, doc) in zip((0, 0, 1, 1), ((0, docs[0]), (12, docs[1]), (0, docs[2]), (20, docs[3]))):
            torch.testing.assert_close(packed[row, start:start + doc.size(1)], model(doc)[0][0])


# ---- FLOPs -----------------------------------------------------------------------------------


def forward_flops(model: GPT, T: int) -> int:
    """FLOPs of one training-mode forward over (4, T) tokens, as PyTorch counts them; the math
    attention kernel, because the fused CPU one is not counted."""
    idx = torch.randint(0, model.config.vocab_size, (4, T))
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model.train()(idx)
    return counter.get_total_flops()


@pytest.mark.parametrize("T", [64, 256])
def test_measured_flops_per_token_fall_as_flops_per_token_estimates(T):
    shape = dict(vocab_size=64, block_size=256, n_layer=4, n_head=4, n_embd=64)
    dense, routed = GPT(GPTConfig(**shape)), GPT(GPTConfig(**shape, mod_capacity=0.125))
    measured = forward_flops(routed, T) / forward_flops(dense, T)
    estimated = routed.flops_per_token(T) / dense.flops_per_token(T)
    assert measured < 0.7  # two of four blocks at 1/8 of the tokens
    assert measured == pytest.approx(estimated, rel=0.01)


# ---- training and settings ---------------------------------------------------------------------


def test_a_routed_gpt_trains_saves_and_loads(tmp_path):
    run, records = quick_pretrain(tmp_path, "mod", n_layer=2, block_size=32, mod_capacity=0.25, mod_every=2)
    assert records[-1]["val_loss"] < 0.5 * records[0]["loss"]
    saved = json.loads((run / "config.json").read_text())["model"]
    assert (saved["mod_capacity"], saved["mod_every"]) == (0.25, 2)
    assert isinstance(load_model(run).blocks[1], DepthRouter)


def test_mod_settings_are_validated_and_old_configs_still_load():
    with pytest.raises(ConfigError, match="mod_capacity must be a share"):
        mod_config(mod_capacity=1.5)
    with pytest.raises(ConfigError, match="mod_capacity must be a share"):
        mod_config(mod_capacity=-0.1)
    with pytest.raises(ConfigError, match="mod_every must be a positive integer"):
        mod_config(mod_every=0)
    with pytest.raises(ConfigError, match="no block would be routed"):
        mod_config(mod_every=5)
    with pytest.raises(ConfigError, match="cannot be combined"):
        mod_config(moe_experts=4)
    config = mod_config(mod_every=3)
    assert GPTConfig.from_dict(config.to_dict()) == config and config.mod_layers == (2,)
    old = {k: v for k, v in GPTConfig(vocab_size=32).to_dict().items() if not k.startswith("mod_")}
    assert GPTConfig.from_dict(old).mod_capacity == 0 and GPTConfig.from_dict(old).mod_layers == ()
    assert not any(isinstance(b, DepthRouter) for b in GPT(GPTConfig(vocab_size=32, n_layer=2, n_embd=16, n_head=2)).blocks)


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_quantizing_a_routed_gpt_keeps_the_one_output_routers_in_float(kind):
    model = mod_gpt(n_embd=64).eval()
    ids = torch.randint(0, 40, (2, 24))
    before = model(ids)[0]
    quantize_weights(model, kind)
    routers = [m for m in model.modules() if isinstance(m, DepthRouter)]
    assert routers and all(type(r.router) is torch.nn.Linear and type(r.predictor) is torch.nn.Linear for r in routers)
    assert isinstance(model.blocks[0].attn.qkv, QuantizedLinear)
    assert (model(ids)[0] - before).abs().max() < 0.5  # still the same model, give or take rounding
