"""Llama 2's combined reward: the safety model's score where the prompt is tagged unsafe or that
score's sigmoid is under the threshold, else the helpful model's; whitened over the batch.
Checked on fake scores, through make_reward with stand-in reward models, and in a PPO run."""

from __future__ import annotations

import json
import math

import pytest
import torch

from groklm.errors import ConfigError
from groklm.train.rl import rewards
from groklm.train.rl.ppo import train_ppo
from groklm.train.rl.rewards import SAFETY_THRESHOLD, combine_scores, make_reward, parse_two_models

from helpers.runs import make_reward_run, read_metrics, tiny_run

LOGIT_THRESHOLD = math.log(SAFETY_THRESHOLD / (1 - SAFETY_THRESHOLD))  # sigmoid(s) < 0.15  <=>  s < -1.73


def whitened(x: list[float]) -> list[float]:
    t = torch.tensor(x)
    return ((t - t.mean()) / t.std(unbiased=False)).tolist()


def test_llama2_rule_picks_one_model_per_answer():
    helpful = torch.tensor([3.0, 3.0, 3.0, 3.0, -1.0])
    harmless = torch.tensor([1.0, 1.0, -2.0, LOGIT_THRESHOLD + 1e-4, 0.5])
    unsafe = torch.tensor([True, False, False, False, False])
    # tagged unsafe: safety's 1.0 although helpful says 3; untagged and safe enough: helpful's 3;
    # untagged but sigmoid(-2) = 0.12 < 0.15: safety's -2; just above the threshold: helpful's; a
    # safe answer the helpful model dislikes keeps its low helpful score
    chosen = [1.0, 3.0, -2.0, 3.0, -1.0]
    assert combine_scores(helpful, harmless, unsafe).tolist() == pytest.approx(whitened(chosen), abs=1e-5)


def test_whitened_to_mean_zero_and_unit_spread():
    out = combine_scores(torch.tensor([5.0, 7.0, 9.0]), torch.zeros(3), torch.zeros(3, dtype=torch.bool))
    assert out.mean().item() == pytest.approx(0, abs=1e-6) and out.std(unbiased=False).item() == pytest.approx(1, abs=1e-5)
    assert out.tolist() == pytest.approx([-1.2247, 0.0, 1.2247], abs=1e-4)
    # one answer (or all alike): nothing to tell apart, no division by zero
    assert combine_scores(torch.tensor([4.0]), torch.tensor([0.0]), torch.tensor([False])).tolist() == [0.0]


def test_threshold_moves_the_boundary():
    helpful, harmless, untagged = torch.tensor([2.0, 0.5]), torch.tensor([0.0, 1.0]), torch.zeros(2, dtype=torch.bool)
    # sigmoid(0) = 0.5: under a 0.6 threshold the first answer is graded on safety (0, below the
    # second's helpful 0.5), under 0.15 on helpfulness (2, above it)
    assert combine_scores(helpful, harmless, untagged, threshold=0.6).tolist() == pytest.approx([-1.0, 1.0], abs=1e-5)
    assert combine_scores(helpful, harmless, untagged, threshold=0.15).tolist() == pytest.approx([1.0, -1.0], abs=1e-5)


class FakeRewardModel:
    """Scores a reply by a table of reply texts (what the real model's score() is asked)."""

    def __init__(self, table: dict[str, float]):
        self.table = table

    def score(self, conversations):
        return torch.tensor([self.table[c[-1]["content"]] for c in conversations])


@pytest.fixture
def fake_models(monkeypatch):
    models = {"H": FakeRewardModel({"Sure.": 2.0, "No.": -1.0, "7": 1.0}),
              "S": FakeRewardModel({"Sure.": -3.0, "No.": 2.0, "7": 0.0})}
    monkeypatch.setattr(rewards.RewardModel, "from_run", lambda run, device="cpu": models[run])


def test_make_reward_reads_the_records_unsafe_tag(fake_models):
    reward = make_reward("helpful=H,harmless=S", torch.device("cpu"))
    prompt = [{"role": "user", "content": "x"}]
    records = [{"prompt": prompt, "unsafe": True}, {"prompt": prompt, "unsafe": True}, {"prompt": prompt, "unsafe": False},
               {"prompt": prompt}]  # no tag: not unsafe
    # unsafe prompt: complying scores safety's -3, refusing 2; the untagged "Sure." is clearly
    # unsafe by the safety model (sigmoid(-3) = 0.05) so it gets -3 too; "7" gets helpful's 1
    assert reward(records, ["Sure.", "No.", "Sure.", "7"]) == pytest.approx(whitened([-3.0, 2.0, -3.0, 1.0]), abs=1e-5)
    # a higher threshold sends "7" (sigmoid(0) = 0.5) to the safety model as well
    loose = make_reward("harmless=S,helpful=H,threshold=0.6", torch.device("cpu"))
    assert loose(records, ["Sure.", "No.", "Sure.", "7"]) == pytest.approx(whitened([-3.0, 2.0, -3.0, 0.0]), abs=1e-5)
    with pytest.raises(ConfigError, match="true or false"):
        reward([{"prompt": prompt, "unsafe": "yes"}], ["7"])


@pytest.mark.parametrize("spec, message", [
    ("helpful=H", "name both"),
    ("helpful=H,harmless=S,harmful=X", "'harmful=X' is not one of them"),
    ("helpful=H,helpful=G,harmless=S", "each key once"),
    ("helpful=H,harmless=", "harmless="),
    ("helpful=H,harmless=S,threshold=1.5", r"in \(0, 1\)"),
    ("helpful=H,harmless=S,threshold=high", "must be a number"),
])
def test_bad_two_model_specs_are_clear_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_two_models(spec)


def test_two_model_spec_parses_with_the_papers_default():
    assert parse_two_models("helpful=runs/h, harmless=runs/s") == ("runs/h", "runs/s", SAFETY_THRESHOLD)
    assert parse_two_models("harmless=s,threshold=0.3,helpful=h") == ("h", "s", 0.3)


def test_ppo_runs_on_two_reward_models_and_remembers_them(tmp_path):
    source = tiny_run(tmp_path / "sft", block_size=256)
    spec = f"helpful={make_reward_run(tmp_path / 'rm_h', source)},harmless={make_reward_run(tmp_path / 'rm_s', source)}"
    run = train_ppo(source, tmp_path / "rl", reward=spec, prompts="synthetic:safety,arithmetic", progress=False,
                    overrides={"max_iters": 1, "prompts_per_step": 4, "max_new_tokens": 2, "device": "cpu"})
    record = read_metrics(run)[0]
    assert record["score"] == pytest.approx(0.0, abs=1e-5)  # the whitened reward's batch mean
    assert json.loads((run / "config.json").read_text())["data"]["reward"] == spec
