"""Reward models: the Bradley-Terry loss (by hand and against TRL), the last-token read under
padding, a short training run on an easy preference, loading and scoring, bad input, resume.

Everything runs a tiny GPT with a character tokenizer (helpers/preferences.py); the `base` and
`pair_files` fixtures are in conftest.py."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from groklm.errors import CheckpointError, ConfigError, DataError, GroklmError
from groklm.model import GPT
from groklm.tokenizer.char import CharTokenizer
from groklm.train.preferences import collate, encode_pairs
from groklm.train.reward import RewardModel, reward_loss, train_reward

from helpers.preferences import CHARS, FAST, easy_pairs, preference_base, write_pairs
from helpers.runs import read_metrics

# ---- the loss -----------------------------------------------------------------------------


def test_reward_loss_matches_hand_computed_values():
    chosen, rejected = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.0, 0.0, 1.0])
    # -log sigmoid(d) = log(1 + exp(-d)) for d = chosen - rejected (- margin)
    expected = [math.log(1 + math.exp(-2)), math.log(2), math.log(1 + math.exp(2))]
    assert torch.allclose(reward_loss(chosen, rejected), torch.tensor(expected))
    expected = [math.log(1 + math.exp(-1.5)), math.log(1 + math.exp(0.5)), math.log(1 + math.exp(2.5))]
    assert torch.allclose(reward_loss(chosen, rejected, margin=0.5), torch.tensor(expected))


def test_reward_loss_matches_trl():
    """TRL's RewardTrainer.compute_loss, with a stub trainer and a model that returns our rewards."""
    trl = pytest.importorskip("trl.trainer.reward_trainer")
    from collections import defaultdict

    gen = torch.Generator().manual_seed(0)
    chosen, rejected, margin = torch.randn(16, generator=gen) * 3, torch.randn(16, generator=gen) * 3, torch.rand(16, generator=gen)
    rewards = torch.cat([chosen, rejected])[:, None]
    stub = SimpleNamespace(model=SimpleNamespace(training=True), args=SimpleNamespace(center_rewards_coefficient=None),
                           accelerator=SimpleNamespace(gather_for_metrics=lambda x: x, gather=lambda x: x),
                           _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1)
    model = lambda **inputs: SimpleNamespace(logits=rewards)  # noqa: E731
    for m in (None, margin):
        inputs = {"input_ids": torch.zeros(32, 3, dtype=torch.long), "attention_mask": torch.ones(32, 3)}
        if m is not None:
            inputs["margin"] = m
        theirs = trl.RewardTrainer.compute_loss(stub, model, inputs)
        ours = reward_loss(chosen, rejected, m if m is not None else 0.0).mean()
        assert abs(theirs.item() - ours.item()) < 1e-6


# ---- reading the last token ---------------------------------------------------------------


def test_padding_does_not_change_a_sequence_reward(base):
    model = RewardModel(GPT.from_run(base))
    torch.nn.init.normal_(model.head.weight)  # a head that is not zero, so rewards differ
    tokenizer = CharTokenizer(CHARS)
    encoded = encode_pairs(tokenizer, easy_pairs(6), 64)
    ids, _, lengths = collate(encoded)
    assert len(set(lengths.tolist())) > 1, "the test needs rows of different lengths"
    together = model(ids, lengths)
    for r in range(ids.size(0)):
        alone = model(ids[r : r + 1, : lengths[r]], lengths[r : r + 1])
        assert torch.allclose(together[r], alone[0], atol=1e-5)
    # More padding (other tokens, too) still changes nothing.
    wider = torch.cat([ids, torch.randint(0, 40, (ids.size(0), 7))], dim=1)
    assert torch.allclose(model(wider, lengths), together, atol=1e-5)


# ---- training -----------------------------------------------------------------------------


def test_reward_model_learns_an_easy_preference_and_loads(base, pair_files, tmp_path):
    train_file, test_file = pair_files
    out = train_reward(base, str(train_file), tmp_path / "rm", val=str(test_file),
                       overrides={**FAST, "max_iters": 60}, progress=False)
    records = read_metrics(out)
    assert records[0]["loss"] == pytest.approx(math.log(2), abs=0.05)  # zero head: a coin flip at first
    assert records[-1]["val_accuracy"] > 0.9 and records[-1]["accuracy"] > 0.9
    config = json.loads((out / "config.json").read_text())
    assert (config["stage"], config["arch"]) == ("reward", "reward")
    assert (out / "tokenizer").is_dir() and (out / "loss.png").is_file()

    rm = RewardModel.from_run(out)
    held_out = easy_pairs(20, seed=3)
    chosen = rm.score([p["prompt"] + [{"role": "assistant", "content": p["chosen"]}] for p in held_out])
    rejected = rm.score([p["prompt"] + [{"role": "assistant", "content": p["rejected"]}] for p in held_out])
    assert chosen.shape == (20,) and (chosen > rejected).float().mean() > 0.9
    with pytest.raises(CheckpointError, match="not a reward model"):
        RewardModel.from_run(base)


def test_resume_matches_an_uninterrupted_run(base, pair_files, tmp_path):
    train_file, _ = pair_files
    settings = {**FAST, "eval_interval": 3, "lr_decay_iters": 6, "warmup_iters": 2}
    straight = train_reward(base, str(train_file), tmp_path / "straight", margin=0.2,
                            overrides={**settings, "max_iters": 6}, progress=False)
    cut = train_reward(base, str(train_file), tmp_path / "cut", margin=0.2, overrides={**settings, "max_iters": 3}, progress=False)
    train_reward(None, None, cut, overrides={"max_iters": 6}, resume=True, progress=False)  # run, data, margin: saved
    a, b = RewardModel.from_run(straight).state_dict(), RewardModel.from_run(cut).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in read_metrics(straight)] == [r["loss"] for r in read_metrics(cut)]


def test_cli_trains_a_reward_model(base, pair_files, tmp_path, monkeypatch):
    from groklm.cli.main import main

    train_file, _ = pair_files
    out = tmp_path / "rm"
    main(["reward", str(base), "--data", str(train_file), "--out", str(out), "--margin", "0.1", "--no-progress",
              "--set", "max_iters=2", "eval_interval=2", "eval_iters=1", "batch_size=2", "device=cpu"])
    config = json.loads((out / "config.json").read_text())
    assert config["reward"]["margin"] == 0.1 and config["train"]["max_iters"] == 2
    with pytest.raises(SystemExit) as error:  # the run exists: a clean error, exit status 1
        main(["reward", str(base), "--data", str(train_file), "--out", str(out)])
    assert error.value.code == 1


# ---- bad input ----------------------------------------------------------------------------


def test_bad_data_and_settings_are_clear_errors(base, pair_files, tmp_path):
    train_file, _ = pair_files
    bad = tmp_path / "bad.jsonl"
    bad.write_text(train_file.read_text().splitlines()[0] + '\n{"prompt": "hi", "chosen": "a"}\nnot json\n')
    fast = {**FAST, "max_iters": 1}
    with pytest.raises(DataError, match="line 2"):
        train_reward(base, str(bad), tmp_path / "a", overrides=fast, progress=False)
    with pytest.raises(DataError, match="does not exist"):
        train_reward(base, str(tmp_path / "missing.jsonl"), tmp_path / "b", overrides=fast, progress=False)
    with pytest.raises(DataError, match="at least 2"):  # one good line left: nothing to hold out
        with pytest.warns(UserWarning, match="skipped 2 bad lines"):
            train_reward(base, str(bad), tmp_path / "c", skip_bad_lines=True, overrides=fast, progress=False)
    long = write_pairs(tmp_path / "long.jsonl", [{"prompt": "x" * 80, "chosen": "a", "rejected": "b"}] * 3)
    with pytest.raises(DataError, match="block_size"):
        with pytest.warns(UserWarning):
            train_reward(base, str(long), tmp_path / "d", overrides=fast, progress=False)
    with pytest.raises(ConfigError, match="margin"):
        train_reward(base, str(train_file), tmp_path / "e", margin=float("nan"), overrides=fast, progress=False)
    with pytest.raises(ConfigError, match="n_layer"):
        train_reward(base, str(train_file), tmp_path / "f", overrides={**fast, "n_layer": 3}, progress=False)
    with pytest.raises(ConfigError, match="--data"):
        train_reward(base, None, tmp_path / "g", overrides=fast, progress=False)
    no_tokenizer = preference_base(tmp_path / "bare")
    for path in (no_tokenizer / "tokenizer").iterdir():
        path.unlink()
    (no_tokenizer / "tokenizer").rmdir()
    with pytest.raises(CheckpointError, match="tokenizer"):
        train_reward(no_tokenizer, str(train_file), tmp_path / "h", overrides=fast, progress=False)
    with pytest.raises(GroklmError):  # nothing to resume
        train_reward(base, str(train_file), tmp_path / "i", overrides=fast, resume=True, progress=False)
    assert not any((tmp_path / name).exists() for name in "abcdefgh")  # no half-made run dirs


def test_data_specs(pair_files):
    from groklm.train.preferences import load_pairs

    train, val = load_pairs("synthetic:spam")
    assert {p["task"] for p in train + val} == {"spam"} and len(train) > len(val) > 0
    assert set(train[0]) >= {"prompt", "chosen", "rejected"}
    with pytest.raises(ConfigError, match="unknown task"):
        load_pairs("synthetic:nope")
    train_file, _ = pair_files
    train, val = load_pairs(str(train_file), seed=7)  # no --val: a seeded tenth is held out
    assert (len(train), len(val)) == (360, 40)
    assert load_pairs(str(train_file), seed=7) == (train, val)
    assert not {json.dumps(p) for p in train} & {json.dumps(p) for p in val}
