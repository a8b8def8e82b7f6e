"""optimizer=muon: which parameters Muon trains, that Muon and AdamW step as one optimizer
(schedule, checkpoint, resume), that a tiny model learns with it, its settings' validation and
the --optimizer flag of every training command."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from groklm.cli.main import build_parser
from groklm.errors import CheckpointError, ConfigError
from groklm.model import GPT, GPTConfig
from groklm.model.lora import apply_lora
from groklm.model.seq2seq import Seq2Seq, Seq2SeqConfig
from groklm.train.config import TrainConfig, parse_set_args
from groklm.train.loop import MuonWithAdamW, make_optimizer, muon_matrices, param_groups
from groklm.train.pretrain import pretrain
from groklm.train.reward import RewardModel
from groklm.train.rl.ppo import train_ppo

from helpers.runs import read_metrics, tiny_run
from helpers.training import TINY, ddp_pretrain, make_data

CPU = torch.device("cpu")
MUON = {"optimizer": "muon", "muon_lr": 0.02}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("data"))


def small_gpt(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{"vocab_size": 32, "block_size": 8, "n_layer": 2, "n_head": 2, "n_embd": 16, **overrides}))


def names_of(model: torch.nn.Module, params) -> set[str]:
    names = {id(p): name for name, p in model.named_parameters()}
    return {names[id(p)] for p in params}


# ---- which parameters Muon trains -----------------------------------------------------------


@pytest.mark.parametrize("tie", [True, False])
def test_muon_takes_the_hidden_matrices_and_adamw_the_rest_each_once(tie):
    model = small_gpt(tie_embeddings=tie)
    optimizer = make_optimizer(model, TrainConfig(**MUON), CPU)
    assert isinstance(optimizer, MuonWithAdamW)
    on_muon = names_of(model, (p for group in optimizer.muon.param_groups for p in group["params"]))
    on_adamw = names_of(model, (p for group in optimizer.adamw.param_groups for p in group["params"]))
    assert on_muon == {f"blocks.{i}.{layer}.weight" for i in range(2)
                       for layer in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")}
    assert {"wte.weight", "wpe.weight", "ln_f.weight", "blocks.0.ln_1.weight"} <= on_adamw
    assert ("lm_head.weight" in on_adamw) == (not tie)  # tied, it is wte.weight, listed once
    every = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert len(every) == len(set(every)) == len(list(model.parameters()))
    # AdamW decays its matrices (an untied head) and nothing else, as without Muon.
    decayed = names_of(model, optimizer.adamw.param_groups[0]["params"])
    assert decayed == ({"lm_head.weight"} if not tie else set())


def test_output_heads_and_vector_shaped_matrices_stay_on_adamw():
    reward = RewardModel(small_gpt())
    assert not {"head.weight"} & names_of(reward, muon_matrices(reward))
    seq2seq = Seq2Seq(Seq2SeqConfig(vocab_size=12, n_embd=8, n_hidden=16))
    on_muon = names_of(seq2seq, muon_matrices(seq2seq))
    # the GRUs' matrices and attention's W and U are hidden; v (one row) and the vocabulary projection are not
    assert {"attention.W.weight", "attention.U.weight", "encoder.weight_hh_l0", "decoder.weight_ih"} <= on_muon
    assert not {"attention.v.weight", "out.weight", "src_embed.weight"} & on_muon


def test_a_lora_run_trains_its_adapters_with_adamw_alone():
    model = small_gpt()
    apply_lora(model, rank=2, alpha=4.0)
    optimizer = make_optimizer(model, TrainConfig(**MUON), CPU)
    assert isinstance(optimizer, torch.optim.AdamW)
    trained = names_of(model, (p for group in optimizer.param_groups for p in group["params"]))
    assert trained and all(".lora_A." in name or ".lora_B." in name for name in trained)


def test_adamw_stays_the_plain_optimizer_by_default():
    model = small_gpt()
    optimizer = make_optimizer(model, TrainConfig(), CPU)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [len(g["params"]) for g in optimizer.param_groups] == [len(g["params"]) for g in param_groups(model, 0.1)]


# ---- one optimizer: rates, steps, state -------------------------------------------------------


def test_muon_steps_at_muon_lr_times_the_schedule_and_decays_like_adamw():
    cfg = TrainConfig(**MUON, lr=1e-3, weight_decay=0.1, muon_momentum=0.9)
    model = small_gpt()
    reference = copy.deepcopy(model)
    torch.manual_seed(1)
    x = torch.randint(0, 32, (2, 8))
    optimizer = make_optimizer(model, cfg, CPU)
    ref_matrices = muon_matrices(reference)
    # By hand: the schedule's rate halved; Muon at half muon_lr, whose decay lr * wd equals AdamW's.
    ref_adamw = torch.optim.AdamW(param_groups(reference, 0.1, frozenset(map(id, ref_matrices))), lr=5e-4,
                                  betas=(cfg.beta1, cfg.beta2))
    ref_muon = torch.optim.Muon(ref_matrices, lr=0.01, weight_decay=0.1 * 1e-3 / 0.02, momentum=0.9)
    for net, steppers in ((model, [optimizer]), (reference, [ref_adamw, ref_muon])):
        for group in steppers[0].param_groups:
            group["lr"] = 5e-4
        for _ in range(2):
            net(x, x)[1].backward()
            for stepper in steppers:
                stepper.step()
                stepper.zero_grad()
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, msg=name)
    assert all(group["lr"] == 5e-4 for group in optimizer.param_groups)  # the schedule's value, as set


def test_state_dict_round_trips_both_optimizers():
    cfg = TrainConfig(**MUON)
    model = small_gpt()
    optimizer = make_optimizer(model, cfg, CPU)
    x = torch.randint(0, 32, (2, 8))
    model(x, x)[1].backward()
    optimizer.step()
    saved = optimizer.state_dict()
    assert set(saved) == {"adamw", "muon"} and saved["muon"]["state"]  # Muon's momentum buffers are in it
    restored = make_optimizer(model, cfg, CPU)
    restored.load_state_dict(saved)
    assert str(restored.state_dict()) == str(saved)


def test_a_gradient_scaler_unscales_muons_gradients_too():
    """float16 training scales the loss; GradScaler unscales every group's gradients before the step."""
    trained = []
    for scaled in (True, False):
        model = small_gpt()
        optimizer = make_optimizer(model, TrainConfig(**MUON), CPU)
        scaler = torch.amp.GradScaler("cpu", enabled=scaled, init_scale=1024.0)  # a power of 2: exact
        x = torch.randint(0, 32, (2, 8), generator=torch.Generator().manual_seed(1))
        for _ in range(3):
            scaler.scale(model(x, x)[1]).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
        trained.append(model.state_dict())
    assert all(torch.equal(trained[0][k], trained[1][k]) for k in trained[0])
    assert not torch.equal(trained[0]["blocks.0.mlp.fc.weight"], small_gpt().state_dict()["blocks.0.mlp.fc.weight"])


# ---- training ----------------------------------------------------------------------------------


def test_pretraining_with_muon_learns(data, tmp_path):
    run = pretrain(data, tmp_path / "run", overrides={**TINY, **MUON, "max_iters": 40, "lr": 1e-2}, progress=False)
    records = read_metrics(run)
    assert records[-1]["loss"] < records[0]["loss"] - 0.5
    assert records[-1]["val_loss"] < records[0]["loss"] - 0.5


def test_resumed_muon_run_matches_an_uninterrupted_one(data, tmp_path):
    # lr_decay_iters fixed: the schedule must not depend on where the first part stopped.
    over = {**TINY, **MUON, "max_iters": 12, "eval_interval": 6, "log_interval": 2, "lr_decay_iters": 12}
    straight = read_metrics(pretrain(data, tmp_path / "straight", overrides=over, progress=False))
    part = pretrain(data, tmp_path / "part", overrides={**over, "max_iters": 6}, progress=False)
    resumed = read_metrics(pretrain(None, part, overrides={"max_iters": 12}, resume=True, progress=False))
    drop = ("elapsed", "tokens_per_sec")
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed] == \
        [{k: v for k, v in r.items() if k not in drop} for r in straight]

    with pytest.raises(CheckpointError, match="another optimizer's state"):
        pretrain(None, part, overrides={"max_iters": 14, "optimizer": "adamw"}, resume=True, progress=False)


@pytest.mark.slow
def test_two_processes_with_muon_match_one(data, tmp_path):
    """DDP averages the gradients before the step, so every process's Muon orthogonalizes the same
    matrices and the run traces the one-process curve (Muon rounds to bfloat16 inside, hence the
    tolerance)."""
    over = {**TINY, **MUON, "max_iters": 12, "log_interval": 1, "grad_accum": 2, "dtype": "float32"}
    single = read_metrics(pretrain(data, tmp_path / "single", overrides=over, progress=False))
    settings = {k: v for k, v in over.items() if k != "optimizer"}
    ddp = read_metrics(ddp_pretrain(data, tmp_path / "ddp", settings, "--optimizer", "muon"))
    assert [r["step"] for r in ddp] == [r["step"] for r in single] == list(range(1, 13))
    for a, b in zip(ddp, single):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4), a["step"]


def test_ppo_trains_with_muon(tmp_path):
    """PPO builds its optimizer and sets each step's rate itself: Muon must train its matrices there too."""
    source = tiny_run(tmp_path / "sft", "abcdehimnorstuy\n ")
    # Rewarding varied answers: every step's answers differ in it, so every step has a gradient.
    run = train_ppo(source, tmp_path / "ppo", reward=lambda records, texts: [float(len(set(text))) for text in texts],
                    prompts=[{"prompt": [{"role": "user", "content": "hi"}]}] * 8, progress=False,
                    overrides={**MUON, "max_iters": 2, "lr": 1e-2, "batch_size": 8, "max_new_tokens": 3,
                               "prompts_per_step": 8, "ppo_epochs": 1, "device": "cpu"})
    before, after = GPT.from_run(source).state_dict(), GPT.from_run(run).state_dict()
    assert not torch.equal(before["blocks.0.mlp.fc.weight"], after["blocks.0.mlp.fc.weight"])
    assert [r["step"] for r in read_metrics(run)] == [1, 2]


# ---- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("values, message", [
    ({"optimizer": "sgd"}, "optimizer must be one of adamw, muon; got 'sgd'"),
    ({"muon_lr": 0.0}, "muon_lr must be > 0"),
    ({"muon_momentum": 1.0}, r"muon_momentum must be in \[0, 1\)"),
    ({"optimizer": "muon", "lr": 0.0, "min_lr": 0.0}, "optimizer=muon needs lr > 0"),
])
def test_bad_muon_settings_raise_config_errors(values, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**values)


@pytest.mark.parametrize("command", [
    ["pretrain", "--out", "r"], ["sft", "base", "--out", "r"], ["reward", "base", "--out", "r"],
    ["dpo", "base", "--out", "r"], ["ppo", "base", "--out", "r"], ["seq2seq", "train", "--out", "r"],
])
def test_every_training_command_takes_optimizer(command):
    args = build_parser().parse_args([*command, "--set", "lr=3e-4", "--optimizer", "muon"])
    assert parse_set_args(args.overrides) == {"lr": "3e-4", "optimizer": "muon"}
    assert build_parser().parse_args(command).overrides == []
