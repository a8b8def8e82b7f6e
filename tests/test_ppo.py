"""RLHF: GAE and the clipped losses on hand-computed numbers, then PPO and GRPO runs on a tiny
model with a toy reward (answers that start with "a" score 1), resume, and the command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from groklm.errors import ConfigError
from groklm.infer.scoring import pack_responses
from groklm.model import GPT
from groklm.tokenizer.chat import render_prompt
from groklm.train.rl.config import RLConfig
from groklm.train.rl.objectives import gae, group_advantages, kl_k3, policy_loss, value_loss
from groklm.train.rl.ppo import train_ppo

from helpers.runs import make_reward_run, read_metrics, tiny_run

PROMPT = [{"role": "user", "content": "hi"}]


def starts_with_a(records, texts):
    return [1.0 if t.startswith("a") else 0.0 for t in texts]


def first_token_prob(run: Path, char: str = "a") -> float:
    import groklm

    model, tokenizer = groklm.load(run)
    ids = torch.tensor([render_prompt(tokenizer, PROMPT)])
    with torch.no_grad():
        logits, _ = model(ids)
    return logits[0, -1].softmax(-1)[tokenizer.encode(char)[0]].item()


FAST = {"max_iters": 8, "lr": 1e-2, "min_lr": 1e-2, "batch_size": 16, "max_new_tokens": 3,
        "prompts_per_step": 32, "ppo_epochs": 2, "eval_interval": 4, "device": "cpu"}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    # A small vocabulary (the chat headers' letters) so "a" starts ~1 in 20 answers at first.
    return tiny_run(tmp_path_factory.mktemp("sft") / "run", "abcdehimnorstuy\n ")


# ---- the math, by hand ----------------------------------------------------------------------


def test_gae_matches_hand_computation():
    # One answer of 3 tokens after one prompt position (mask 0 1 1 1), gamma 0.9, lam 0.5.
    rewards = torch.tensor([[0.0, 0.0, -0.1, 1.0]])
    values = torch.tensor([[9.0, 0.5, 0.4, 0.2]])  # position 0 is the prompt: ignored
    mask = torch.tensor([[False, True, True, True]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    d3 = 1.0 + 0.9 * 0.0 - 0.2  # the state after the last token is terminal: worth 0
    d2 = -0.1 + 0.9 * 0.2 - 0.4
    d1 = 0.0 + 0.9 * 0.4 - 0.5
    a3 = d3
    a2 = d2 + 0.45 * a3
    a1 = d1 + 0.45 * a2
    assert adv[0].tolist() == pytest.approx([0.0, a1, a2, a3])
    assert ret[0].tolist() == pytest.approx([0.0, a1 + 0.5, a2 + 0.4, a3 + 0.2])
    # gamma = lam = 1: the advantage is the return-to-go minus the value.
    adv, _ = gae(rewards, values, mask, 1.0, 1.0)
    assert adv[0, 1:].tolist() == pytest.approx([0.9 - 0.5, 0.9 - 0.4, 1.0 - 0.2])


def test_clipped_policy_loss_by_hand():
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 1.0]]))  # ratios 1.5, 0.5, 1.1, (masked)
    adv = torch.tensor([[1.0, 1.0, -2.0, 100.0]])
    mask = torch.tensor([[True, True, True, False]])
    loss, clip_frac = policy_loss(logp, old, adv, mask, clip_eps=0.2)
    # token 1: A>0, ratio 1.5 -> clipped to 1.2: -1.2 (the clipped term is the larger: counted)
    # token 2: A>0, ratio 0.5 -> min(0.5, 0.8) = 0.5: -0.5 (unclipped; pessimism keeps it)
    # token 3: A<0, ratio 1.1 inside the range: +2.2
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 2.2) / 3)
    assert clip_frac.item() == pytest.approx(1 / 3)


def test_clipped_value_loss_by_hand():
    old = torch.tensor([[0.0, 0.0]])
    new = torch.tensor([[1.0, 0.1]])
    ret = torch.tensor([[2.0, 0.0]])
    mask = torch.tensor([[True, True]])
    # token 1: max((1-2)^2, (0.2-2)^2) = 3.24; token 2: max(0.01, 0.01) = 0.01
    assert value_loss(new, old, ret, mask, clip=0.2).item() == pytest.approx(0.5 * (3.24 + 0.01) / 2)


def test_k3_and_group_advantages():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.0, -1.0])
    assert kl_k3(logp, ref).tolist() == pytest.approx([0.0, math.e - 1 - 1])
    adv = group_advantages(torch.tensor([0.0, 3.0, 3.0, 1.0, 1.0, 1.0]), group_size=3)
    # group 1: mean 2, sample std sqrt((4 + 1 + 1) / 2) = sqrt(3); group 2: all equal -> no signal
    s3 = math.sqrt(3)
    assert adv.tolist() == pytest.approx([-2 / s3, 1 / s3, 1 / s3, 0.0, 0.0, 0.0], rel=1e-4)


def test_pack_aligns_mask_with_next_token_positions():
    ro = pack_responses([[1, 2, 3], [4, 5]], [[7, 8], [9]], block_size=16)
    assert ro.sequences.tolist() == [[1, 2, 3, 7, 8], [4, 5, 9, 0, 0]]
    assert ro.mask.tolist() == [[False, False, True, True], [False, True, False, False]]


def test_bad_rl_config_is_a_clear_error():
    with pytest.raises(ConfigError, match="group_size"):
        RLConfig(algo="grpo", group_size=1)
    with pytest.raises(ConfigError, match="algo"):
        RLConfig(algo="dpo")


# ---- runs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_rl_raises_the_rewarded_tokens_probability(source, tmp_path, algo):
    over = dict(FAST)
    if algo == "grpo":
        over.update(prompts_per_step=8, group_size=4)
    run = train_ppo(source, tmp_path / algo, reward=starts_with_a, prompts=[{"prompt": PROMPT}] * 32,
                    algo=algo, kl_coef=0.01, overrides=over, progress=False)
    before, after = first_token_prob(source), first_token_prob(run)
    assert after > 4 * before, (before, after)  # about 0.05 -> 0.8
    records = read_metrics(run)
    assert [r["step"] for r in records] == list(range(1, 9))
    for key in ("score", "kl", "entropy", "clip_frac", "policy_loss", "response_len"):
        assert all(math.isfinite(r[key]) for r in records), key
    assert ("value_loss" in records[-1]) == (algo == "ppo")
    assert records[-1]["kl"] > 0  # the policy has moved away from the reference
    config = json.loads((run / "config.json").read_text())
    assert config["stage"] == algo and (run / "reward_kl.png").stat().st_size > 0
    GPT.from_run(run)  # a plain GPT run


def test_resume_continues_exactly(source, tmp_path):
    kwargs = dict(reward=starts_with_a, prompts=[{"prompt": PROMPT}], progress=False)
    over = {**FAST, "max_iters": 4, "eval_interval": 2, "prompts_per_step": 8}
    whole = train_ppo(source, tmp_path / "whole", overrides=over, **kwargs)
    train_ppo(source, tmp_path / "part", overrides={**over, "max_iters": 2}, **kwargs)
    part = train_ppo(None, tmp_path / "part", overrides={"max_iters": 4}, resume=True, **kwargs)
    a, b = GPT.from_run(whole).state_dict(), GPT.from_run(part).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in read_metrics(part)] == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match="already holds a run"):
        train_ppo(source, tmp_path / "whole", overrides=over, **kwargs)


def test_ppo_command_with_a_prompts_file(source, tmp_path, monkeypatch, capsys):
    import groklm.cli.main
    import groklm.train.rl.ppo as ppo

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": PROMPT}) + "\n")
    # The CLI's reward is a verifier or a reward model; here a stand-in for the verifier.
    monkeypatch.setattr(ppo, "make_reward", lambda spec, device: starts_with_a)
    out = tmp_path / "cli"
    groklm.cli.main.main(["ppo", str(source), "--prompts", str(prompts), "--out", str(out), "--algo", "grpo",
                     "--kl-coef", "0.1", "--no-progress", "--set", "max_iters=2", "prompts_per_step=2",
                     "group_size=2", "max_new_tokens=2", "device=cpu"])
    assert "step 2, reward" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["rl"]["kl_coef"] == 0.1


@pytest.mark.parametrize("reward", ["verifier", "reward_model"])
def test_real_rewards_on_synthetic_prompts(tmp_path, reward):
    source = tiny_run(tmp_path / "sft", block_size=256)
    spec = "verifier" if reward == "verifier" else make_reward_run(tmp_path / "rm", source)
    run = train_ppo(source, tmp_path / "rl", reward=str(spec), prompts="synthetic:arithmetic,spam", progress=False,
                    overrides={"max_iters": 1, "prompts_per_step": 2, "max_new_tokens": 2, "device": "cpu"})
    record = read_metrics(run)[0]
    assert math.isfinite(record["score"]) and record["response_len"] <= 2
    assert json.loads((run / "config.json").read_text())["data"]["reward"] == str(spec)


def test_prompts_must_split_evenly_among_processes(source, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun --nproc_per_node=2 says; refused before joining
    with pytest.raises(ConfigError, match="multiple of 2"):
        train_ppo(source, tmp_path / "odd", reward=starts_with_a, prompts=[{"prompt": PROMPT}] * 8,
                  overrides={**FAST, "prompts_per_step": 3}, progress=False)
    assert not (tmp_path / "odd").exists()
