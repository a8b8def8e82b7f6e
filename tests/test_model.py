"""The decoder itself: shapes, the two attention paths, causality, sampling, saving and loading."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from groklm.errors import CheckpointError, ConfigError
from groklm.infer.decode import generate
from groklm.infer.sampling import filter_logits
from groklm.model.config import GPTConfig
from groklm.model.gpt import GPT, IGNORE_INDEX
from groklm.rundir import CONFIG_FILE, WEIGHTS_FILE, write_json

from helpers.runs import save_run

VOCAB, BLOCK, EMBD = 48, 16, 32

# Every architectural choice, crossed: 3 x 2 x 3 x 2 x 2 x 2 = 144 tiny models.
ALL_OPTIONS = [
    dict(pos=pos, norm=norm, mlp=mlp, n_kv_head=kv, bias=bias, tie_embeddings=tie)
    for pos, norm, mlp, kv, bias, tie in itertools.product(
        ("learned", "sinusoidal", "rope"), ("layernorm", "rmsnorm"), ("gelu", "gelu_exact", "swiglu"),
        (4, 2), (True, False), (True, False),
    )
]


def option_id(options: dict) -> str:
    gqa = "gqa" if options["n_kv_head"] < 4 else "mha"
    bias = "bias" if options["bias"] else "nobias"
    tie = "tied" if options["tie_embeddings"] else "untied"
    return "-".join([options["pos"], options["norm"], options["mlp"], gqa, bias, tie])


def tiny(seed: int = 0, **options) -> GPT:
    torch.manual_seed(seed)
    defaults = dict(vocab_size=VOCAB, block_size=BLOCK, n_layer=2, n_head=4, n_embd=EMBD)
    model = GPT(GPTConfig(**{**defaults, **options})).eval()
    # GPT-2 init puts biases and norm gains at 0 and 1; randomise them so a test that passes
    # cannot be relying on a parameter that happens to be neutral.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name or name.startswith("ln_f"):
                param.add_(0.1 * torch.randn_like(param))
    return model


def random_ids(batch: int = 2, length: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def explicit_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The forward pass again, but through the written-out attention instead of SDPA."""
    x = model.embed(idx)
    for block in model.blocks:
        x, _ = block(x, return_weights=True)
    return model.lm_head(model.ln_f(x))


# ---- shapes, loss, the two attention paths ------------------------------------------------


@pytest.mark.parametrize("options", ALL_OPTIONS, ids=option_id)
def test_every_option_forward_loss_and_explicit_path(options):
    model = tiny(**options)
    idx = random_ids()
    logits, loss = model(idx)
    assert logits.shape == (2, 12, VOCAB) and loss is None
    targets = random_ids(seed=2)
    _, loss = model(idx, targets)
    assert loss.ndim == 0 and torch.isfinite(loss)
    # Near-uniform predictions at init: the loss is close to log(vocab).
    assert abs(loss.item() - torch.log(torch.tensor(float(VOCAB))).item()) < 1.0
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())

    with torch.no_grad():
        assert torch.allclose(explicit_logits(model, idx), model(idx)[0], atol=1e-5, rtol=0)
    maps = model.attention_weights(idx)
    assert len(maps) == 2 and maps[0].shape == (2, 4, 12, 12)
    assert torch.allclose(maps[0].sum(-1), torch.ones(2, 4, 12), atol=1e-6)
    assert (maps[0].triu(diagonal=1) == 0).all()  # nothing attends to the future


@pytest.mark.parametrize("length", [12, 257])
def test_bf16_training_on_a_cpu_takes_the_faster_attention_path_and_the_same_math(length, monkeypatch):
    """Short bf16 sequences on a CPU use the written-out attention (faster there than the fused
    kernel); long ones the fused kernel. Either way: the float32 model's logits and gradients,
    to bf16's precision, and packed documents still see only themselves."""
    model = tiny(pos="rope", n_kv_head=2, block_size=300)
    idx = random_ids(length=length)
    doc_ids = (torch.arange(length) >= length // 2).long().expand(2, length)
    reference, _ = model(idx, doc_ids=doc_ids)
    reference.square().mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    fused_calls = []
    fused = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **kw: fused_calls.append(1) or fused(*a, **kw))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = model(idx, doc_ids=doc_ids)
    logits.float().square().mean().backward()
    assert logits.dtype == torch.bfloat16
    assert len(fused_calls) == (0 if length == 12 else 2)  # one per layer when fused
    assert (logits.float() - reference).abs().max() < 0.05
    for got, want in zip((p.grad for p in model.parameters()), grads):
        assert (got - want).norm() <= 0.05 * want.norm() + 1e-6


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope"])
@pytest.mark.parametrize("kv", [4, 1])
def test_causality_future_tokens_do_not_change_the_past(pos, kv):
    model = tiny(pos=pos, n_kv_head=kv)
    idx = random_ids(batch=1, length=10)
    changed = idx.clone()
    changed[0, 6] = (changed[0, 6] + 1) % VOCAB
    with torch.no_grad():
        before, after = model(idx)[0], model(changed)[0]
    assert torch.equal(before[:, :6], after[:, :6])
    assert not torch.allclose(before[:, 6:], after[:, 6:])


def test_sequence_longer_than_block_size_is_refused():
    with pytest.raises(ValueError, match="block_size"):
        tiny()(torch.zeros(1, BLOCK + 1, dtype=torch.long))


def test_gqa_query_heads_share_consecutive_kv_heads():
    # 4 query heads, 2 kv heads: heads 0,1 read kv head 0 and heads 2,3 read kv head 1.
    model = tiny(pos="rope", n_kv_head=2)
    idx = random_ids(batch=1, length=8)
    before = model.attention_weights(idx)[0][0]
    attn = model.blocks[0].attn
    d = attn.head_dim
    with torch.no_grad():  # zero the keys of kv head 0: its query heads see all-equal scores
        attn.qkv.weight[4 * d : 5 * d] = 0
        if attn.qkv.bias is not None:
            attn.qkv.bias[4 * d : 5 * d] = 0
    after = model.attention_weights(idx)[0][0]
    uniform = torch.tril(torch.ones(8, 8)) / torch.arange(1, 9)[:, None]
    for head in (0, 1):
        assert torch.allclose(after[head], uniform, atol=1e-6)
    for head in (2, 3):
        assert torch.equal(after[head], before[head])


def test_gqa_has_fewer_kv_parameters():
    full, grouped = tiny(n_kv_head=4), tiny(n_kv_head=1)
    d = EMBD // 4
    assert full.blocks[0].attn.qkv.weight.shape == (3 * EMBD, EMBD)
    assert grouped.blocks[0].attn.qkv.weight.shape == (EMBD + 2 * d, EMBD)


# ---- loss ------------------------------------------------------------------------------------


def test_ignore_index_targets_are_left_out_of_the_loss():
    model = tiny()
    idx, targets = random_ids(), random_ids(seed=3)
    masked = targets.clone()
    masked[:, :5] = IGNORE_INDEX
    logits, loss = model(idx, masked)
    expected = F.cross_entropy(logits[:, 5:].reshape(-1, VOCAB), targets[:, 5:].reshape(-1))
    assert torch.allclose(loss, expected, atol=1e-6)
    # Only one position counted: the loss is that position's cross-entropy alone.
    single = torch.full_like(targets, IGNORE_INDEX)
    single[1, 7] = targets[1, 7]
    assert torch.allclose(model(idx, single)[1], F.cross_entropy(logits[1, 7], targets[1, 7]), atol=1e-6)


# ---- generation and sampling -----------------------------------------------------------------


def test_generate_same_seed_same_tokens_different_seed_different_tokens():
    model = tiny(vocab_size=256)
    prompt = torch.tensor([[1, 2, 3]])
    a = generate(model, prompt, 12, seed=7)
    b = generate(model, prompt, 12, seed=7)
    c = generate(model, prompt, 12, seed=8)
    assert a.shape == (1, 15) and torch.equal(a[:, :3], prompt)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def greedy(model: GPT, prompt: torch.Tensor, steps: int) -> torch.Tensor:
    idx = prompt
    for _ in range(steps):
        logits, _ = model(idx[:, -model.config.block_size :])
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


def test_temperature_zero_and_top_k_one_are_greedy():
    model = tiny()
    prompt = torch.tensor([[5, 6], [7, 8]])
    with torch.no_grad():
        expected = greedy(model, prompt, 20)  # runs past block_size: the context window slides
    assert torch.equal(generate(model, prompt, 20, temperature=0.0), expected)
    assert torch.equal(generate(model, prompt, 20, temperature=1.0, top_k=1, seed=3), expected)


def test_top_p_keeps_exactly_the_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    kept = lambda p: torch.isfinite(filter_logits(logits, top_p=p))[0].tolist()  # noqa: E731
    assert kept(0.5) == [True, False, False, False]
    assert kept(0.7) == [True, True, False, False]
    assert kept(0.8) == [True, True, False, False]
    assert kept(0.81) == [True, True, True, False]
    assert kept(1.0) == [True, True, True, True]
    # The survivors keep their relative odds.
    filtered = filter_logits(logits, top_p=0.9).softmax(-1)[0]
    assert torch.allclose(filtered[:3], probs[0, :3] / 0.95, atol=1e-6)


def test_top_p_sampling_never_leaves_the_nucleus():
    model = tiny(vocab_size=256)
    prompt = torch.tensor([[1]])
    with torch.no_grad():
        logits = model(prompt)[0][:, -1]
    nucleus = torch.isfinite(filter_logits(logits, top_p=0.3))[0]
    assert 1 < nucleus.sum() < 256
    draws = {generate(model, prompt, 1, top_p=0.3, seed=s)[0, 1].item() for s in range(40)}
    assert all(nucleus[t] for t in draws)


def test_bad_sampling_settings_are_config_errors():
    model = tiny()
    prompt = torch.tensor([[1]])
    for bad in (dict(temperature=-1.0), dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5)):
        with pytest.raises(ConfigError):
            generate(model, prompt, 1, **bad)


# ---- parameters ------------------------------------------------------------------------------


def test_parameter_count_matches_a_hand_count():
    V, T, C, L, H = VOCAB, BLOCK, EMBD, 2, 4 * EMBD
    gpt2 = tiny(bias=True, tie_embeddings=True)
    norm = 2 * C  # LayerNorm gain + bias
    attn = C * 3 * C + 3 * C + C * C + C
    mlp = C * H + H + H * C + C
    assert gpt2.num_params() == V * C + T * C + L * (2 * norm + attn + mlp) + norm
    assert gpt2.num_params(non_embedding=True) == L * (2 * norm + attn + mlp) + norm

    # Llama shape: no position table, no biases, RMSNorm gain only, 2 kv heads, 3-matrix MLP, untied.
    llama = tiny(pos="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2, bias=False, tie_embeddings=False)
    H = llama.config.mlp_hidden
    assert H == 128  # 8/3 * 32 rounded up to a multiple of 64
    d = C // 4
    attn = C * (C + 2 * 2 * d) + C * C
    mlp = 3 * C * H
    assert llama.num_params() == 2 * V * C + L * (2 * C + attn + mlp) + C


def test_tied_embeddings_share_storage():
    tied, untied = tiny(tie_embeddings=True), tiny(tie_embeddings=False)
    assert tied.lm_head.weight is tied.wte.weight
    assert tied.lm_head.weight.data_ptr() == tied.wte.weight.data_ptr()
    assert untied.lm_head.weight.data_ptr() != untied.wte.weight.data_ptr()
    assert tied.num_params() == untied.num_params() - VOCAB * EMBD


# ---- saving and loading a run ----------------------------------------------------------------


@pytest.mark.parametrize("tie", [True, False])
def test_save_and_from_run_round_trip(tmp_path, tie):
    model = tiny(pos="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2, tie_embeddings=tie)
    save_run(tmp_path, model)
    loaded = GPT.from_run(tmp_path)
    assert not loaded.training
    assert loaded.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert (loaded.lm_head.weight.data_ptr() == loaded.wte.weight.data_ptr()) == tie
    idx = random_ids()
    with torch.no_grad():
        assert torch.equal(model(idx)[0], loaded(idx)[0])


def test_corrupt_truncated_or_mismatched_weights_are_checkpoint_errors(tmp_path):
    model = tiny()
    save_run(tmp_path, model)
    weights = tmp_path / WEIGHTS_FILE
    good = weights.read_bytes()
    for bad in (good[: len(good) // 2], good[:20], b"", b"not a safetensors file" * 10):
        weights.write_bytes(bad)
        with pytest.raises(CheckpointError):
            GPT.from_run(tmp_path)
    weights.write_bytes(good)
    # Weights from a different shape of model.
    write_json(tmp_path / CONFIG_FILE, {"model": {**model.config.to_dict(), "n_embd": 64}})
    with pytest.raises(CheckpointError):
        GPT.from_run(tmp_path)
    weights.unlink()
    with pytest.raises(CheckpointError):
        GPT.from_run(tmp_path)
    with pytest.raises(CheckpointError):
        GPT.from_run(tmp_path / "missing")
