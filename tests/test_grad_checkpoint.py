"""Gradient checkpointing (GPT.grad_checkpoint, TrainConfig.grad_checkpoint): the same loss and
the same gradients as an ordinary backward pass, on a plain model and on a LoRA-wrapped one, for
far fewer activations kept between forward and backward; wired into the shared training loop,
and refused where it would silently do nothing.

Dropout is on in the equality tests: recomputing a block must replay the dropout masks of its
first forward, or the gradients would belong to a different network."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import groklm.model.gpt as gpt_module
from groklm.errors import ConfigError
from groklm.model import GPT, GPTConfig
from groklm.model.gpt import set_grad_checkpoint
from groklm.model.lora import apply_lora
from groklm.model.rnn import RecurrentLM, RNNConfig
from groklm.rundir import RunDir
from groklm.train.config import TrainConfig
from groklm.train.dpo import train_dpo
from groklm.train.reward import train_reward
from groklm.train.sft import sft
from groklm.train.stage import stage_process

from helpers.preferences import FAST as FAST_PREF
from helpers.runs import read_metrics, tiny_run
from helpers.training import sum_chats

VOCAB = 64
REPO = Path(__file__).resolve().parent.parent


def tiny_gpt(**overrides) -> GPT:
    torch.manual_seed(0)
    values = dict(vocab_size=VOCAB, n_layer=3, n_head=4, n_embd=32, block_size=32, dropout=0.1,
                  pos="rope", norm="rmsnorm", mlp="swiglu", bias=False)
    return GPT(GPTConfig(**{**values, **overrides})).train()


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs, targets and packed document ids (two documents a row), so the mask goes through too."""
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, VOCAB, (4, 32), generator=generator)
    targets = torch.randint(0, VOCAB, (4, 32), generator=generator)
    doc_ids = (torch.arange(32) >= 13).long().expand(4, 32)
    return idx, targets, doc_ids


def loss_and_grads(model: GPT, checkpointed: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    set_grad_checkpoint(model, checkpointed)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(123)  # the same dropout masks for both runs
    _, loss = model(*batch())
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same_loss_and_grads(model: GPT) -> dict[str, torch.Tensor]:
    plain_loss, plain_grads = loss_and_grads(model, checkpointed=False)
    ckpt_loss, ckpt_grads = loss_and_grads(model, checkpointed=True)
    assert torch.equal(plain_loss, ckpt_loss)
    assert plain_grads.keys() == ckpt_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    return ckpt_grads


def test_checkpointing_gives_the_same_loss_and_gradients():
    model = tiny_gpt()
    grads = assert_same_loss_and_grads(model)
    assert len(grads) == len(list(model.parameters()))  # every weight got a gradient both ways


def test_checkpointing_a_gpt2_shaped_model_gives_the_same_gradients():
    assert_same_loss_and_grads(tiny_gpt(pos="learned", norm="layernorm", mlp="gelu", bias=True, tie_embeddings=True))


def test_checkpointing_a_mixture_of_experts_gives_the_same_gradients():
    # Training adds the router's load-balancing loss, read from the blocks after the forward:
    # recomputing them in backward must not change it.
    assert_same_loss_and_grads(tiny_gpt(moe_experts=4, moe_top_k=2))


def test_checkpointing_a_lora_model_gives_the_same_adapter_gradients_and_none_to_the_base():
    model = tiny_gpt()
    apply_lora(model, rank=4, alpha=8.0, dropout=0.1)
    with torch.no_grad():  # B starts at zero; a non-zero B makes A's gradient non-zero too
        for name, param in model.named_parameters():
            if param.requires_grad and "lora_B" in name:
                param.normal_(0.0, 0.1)
    grads = assert_same_loss_and_grads(model)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert grads.keys() == trainable and all("lora_" in name for name in trainable)
    assert all(grad.abs().sum() > 0 for grad in grads.values())


def saved_activation_bytes(model: GPT) -> int:
    """Bytes of the tensors autograd keeps from the forward pass for the backward pass (parameters,
    which exist anyway, left out)."""
    params = {p.data_ptr() for p in model.parameters()}
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        if tensor.data_ptr() not in params:
            total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        _, loss = model(*batch())
    loss.backward()
    return total


def test_checkpointing_keeps_far_fewer_activations():
    model = tiny_gpt(n_layer=6, dropout=0.0)
    plain = saved_activation_bytes(model)
    set_grad_checkpoint(model)
    checkpointed = saved_activation_bytes(model)
    # Without: every intermediate of 6 blocks. With: each block's input only (plus the head's loss).
    assert checkpointed < plain / 3


def test_no_recomputation_without_gradients(checkpoint_calls):
    model = tiny_gpt()
    set_grad_checkpoint(model)
    with torch.no_grad():  # evaluation, a DPO reference pass: no backward will come
        model(*batch())
    assert checkpoint_calls == []
    model(*batch())
    assert len(checkpoint_calls) == model.config.n_layer


def test_set_grad_checkpoint_refuses_a_model_without_a_transformer():
    model = RecurrentLM(RNNConfig(vocab_size=VOCAB, n_embd=16))
    with pytest.raises(ConfigError, match="leave grad_checkpoint out"):
        set_grad_checkpoint(model)


# ---- wired into training --------------------------------------------------------------------

CHARS = "abcdefghijklmnopqrstuvwxyz0123456789+=?!., \n"
FAST = {"max_iters": 4, "batch_size": 4, "eval_interval": 2, "eval_iters": 1, "log_interval": 1,
        "warmup_iters": 1, "device": "cpu"}


@pytest.fixture
def checkpoint_calls(monkeypatch) -> list[int]:
    """Counts the blocks run under torch's checkpoint: proof that a stage's key reached its model."""
    calls = []
    real_checkpoint = gpt_module.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls.append(1)
        return real_checkpoint(*args, **kwargs)

    monkeypatch.setattr(gpt_module, "checkpoint", counting_checkpoint)
    return calls


@pytest.mark.parametrize("lora", [{}, {"lora_rank": 2}], ids=["full", "lora"])
def test_sft_with_grad_checkpoint_recomputes_and_trains_the_same(tmp_path, checkpoint_calls, lora):
    base = tiny_run(tmp_path / "base", CHARS, block_size=80, n_layer=2, n_embd=32, pos="rope", norm="rmsnorm", mlp="swiglu")
    plain = read_metrics(sft(base, sum_chats(40), tmp_path / "plain", overrides={**FAST, **lora}, progress=False))

    assert checkpoint_calls == []  # off by default
    overrides = {**FAST, **lora, "grad_checkpoint": True}
    checkpointed = read_metrics(sft(base, sum_chats(40), tmp_path / "ckpt", overrides=overrides, progress=False))
    assert checkpoint_calls  # the key reached the model: its blocks were checkpointed
    assert [r["step"] for r in checkpointed] == [r["step"] for r in plain]
    for mine, theirs in zip(checkpointed, plain):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-5)


@pytest.mark.parametrize("stage, arch, shared_loop", [("pretrain", "rnn", True), ("seq2seq", "seq2seq", True),
                                                      ("ppo", "gpt", False)])
def test_stages_that_cannot_checkpoint_refuse_the_key_and_write_nothing(tmp_path, stage, arch, shared_loop):
    config = {"stage": stage, "parent": None, "arch": arch, "model": {}, "train": {}, "data": {}}
    with pytest.raises(ConfigError, match="leave grad_checkpoint out"):
        with stage_process(RunDir(tmp_path / "run"), config, TrainConfig(grad_checkpoint=True, device="cpu"),
                           resume=False, shared_loop=shared_loop):
            pass
    assert not (tmp_path / "run").exists()


# ---- benchmarks/finetune.py measures what it says ------------------------------------------


def load_benchmark():
    spec = importlib.util.spec_from_file_location("finetune", REPO / "benchmarks" / "finetune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_finetune_benchmark_configurations_train_the_right_parameters(tmp_path):
    run = tiny_run(tmp_path / "base", CHARS, block_size=80, n_layer=2, n_embd=32, pos="rope", norm="rmsnorm", mlp="swiglu")
    bench = load_benchmark()
    common = dict(run=str(run), batch=2, seq=32, steps=2, warmup=1, rank=2, alpha=4.0, targets="attn,mlp", threads=1)
    full = bench.run_configuration(dict(common, lora=False, grad_checkpoint=False))
    lora = bench.run_configuration(dict(common, lora=True, grad_checkpoint=False))
    ckpt = bench.run_configuration(dict(common, lora=True, grad_checkpoint=True))
    assert full["trainable_params"] == full["total_params"]
    assert lora["trainable_params"] < full["trainable_params"] / 4
    # The same seeded batches and steps: checkpointing changes memory and time, not the training.
    assert ckpt["last_loss"] == pytest.approx(lora["last_loss"], rel=1e-5)
    assert all(figures["tokens_per_sec"] > 0 and figures["peak_rss_mb"] > 0 for figures in (full, lora, ckpt))


@pytest.mark.parametrize("stage", ["dpo", "reward"])
def test_preference_stages_with_grad_checkpoint_train_the_same(base, pair_files, tmp_path, checkpoint_calls, stage):
    train_file, _ = pair_files
    train = train_dpo if stage == "dpo" else train_reward
    settings = {**FAST_PREF, "lora_rank": 2, "max_iters": 3, "log_interval": 1}
    plain = read_metrics(train(base, str(train_file), tmp_path / "plain", overrides=settings, progress=False))

    assert checkpoint_calls == []  # off by default
    checkpointed = read_metrics(train(base, str(train_file), tmp_path / "ckpt",
                                      overrides={**settings, "grad_checkpoint": True}, progress=False))
    assert checkpoint_calls
    assert [r["loss"] for r in checkpointed] == pytest.approx([r["loss"] for r in plain], rel=1e-5)
