"""The main job end to end, in miniature: every stage runs, the report holds real figures."""

from __future__ import annotations

import json
import math

import pytest

from groklm.errors import ConfigError
from groklm.experiments.speedrun import CHATTY_DEMONSTRATIONS, SAMPLES_PER_PROBLEM, speedrun, stage_overrides
from groklm.tasks import DEFAULT_TASKS, verify

STEPS = {"eval_iters": 2, "batch_size": 4, "warmup_iters": 1}
SMALL = {
    "pretrain": {**STEPS, "max_iters": 6, "eval_interval": 3, "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 128},
    "sft": {**STEPS, "max_iters": 4, "eval_interval": 2},
    "reward": {**STEPS, "max_iters": 3, "eval_interval": 3},
    "dpo": {**STEPS, "max_iters": 3, "eval_interval": 3},
    "ppo": {"max_iters": 2, "prompts_per_step": 2, "max_new_tokens": 4},
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("speedrun")
    return out, speedrun(out, vocab_size=512, overrides=SMALL, progress=False, eval_n=1)


def test_every_stage_writes_its_directory_and_the_report(finished):
    out, report = finished
    for stage in ("tokenizer", "data", "base", "sft", "reward", "dpo", "ppo"):
        assert (out / stage).is_dir()
    for run in ("base", "sft", "dpo", "ppo"):
        assert (out / run / "model.safetensors").is_file()
    assert (out / "base" / "loss.png").is_file() and (out / "evals.png").is_file()
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    markdown = (out / "report.md").read_text()
    for row in ("| pretrain |", "| sft |", "| reward model |", "| dpo |", "| ppo |", "## Accuracy", "## Samples",
                "## The targeted metric", "## Sample conversations", "| mean | mean, held-out wordings |",
                "Accuracy per task on held-out wordings"):
        assert row in markdown


def test_report_figures_are_measured(finished):
    _, report = finished
    stages = report["stages"]
    base = stages["pretrain"]
    assert base["steps"] == 6 and stages["sft"]["steps"] == 4 and stages["ppo"]["steps"] == 2
    assert base["val_loss"] < base["uniform_loss"] == pytest.approx(math.log(512))
    assert stages["data"]["bytes_per_token"] > 1.5  # BPE compresses real text
    assert 0.0 <= stages["reward"]["val_accuracy"] <= 1.0
    assert set(report["evals"]) == {"base", "sft", "dpo", "ppo"}
    assert all(r["count"] == 1 for results in report["evals"].values() for r in results.values())
    assert len(report["samples"]) == 3


def test_report_scores_the_chat_stages_on_held_out_wordings_apart(finished):
    """evals_heldout: the chat stages, greedy, on every task's heldout split, beside (not in) evals."""
    out, report = finished
    heldout = report["evals_heldout"]
    assert set(heldout) == {"sft", "dpo", "ppo"} and all(set(results) == set(DEFAULT_TASKS) for results in heldout.values())
    assert all(r["count"] == 1 and 0.0 <= r["accuracy"] <= 1.0 for results in heldout.values() for r in results.values())
    assert all(set(results) == set(DEFAULT_TASKS) for results in report["evals"].values())  # no heldout task mixed in
    # the accuracy table's rows: stage, a cell per task, the mean, the held-out wordings' mean
    cells = [line.strip("| ").split(" | ") for line in (out / "report.md").read_text().splitlines()]
    accuracy_rows = {row[0]: row for row in cells if len(row) == len(DEFAULT_TASKS) + 3}
    percent = lambda results: f"{100 * sum(r['accuracy'] for r in results.values()) / len(results):.1f}%"  # noqa: E731
    assert accuracy_rows["base"][-2:] == [percent(report["evals"]["base"]), "not measured"]
    for stage, results in heldout.items():
        assert accuracy_rows[stage][-2:] == [percent(report["evals"][stage]), percent(results)]


def test_report_has_the_targeted_metric_with_kl(finished):
    """DPO and PPO are judged on sampled replies (SAMPLES_PER_PROBLEM per test problem), with the KL from SFT."""
    out, report = finished
    sampled, targeted = report["sampled_evals"], report["targeted"]
    assert set(sampled) == {"sft", "dpo", "ppo"}
    assert all(r["count"] == SAMPLES_PER_PROBLEM for results in sampled.values() for r in results.values())
    assert all("kl" in r for stage in ("dpo", "ppo") for r in sampled[stage].values())
    assert not any("kl" in r for r in sampled["sft"].values())
    for stage in ("dpo", "ppo"):
        mean = sum(r["mean_score"] for r in sampled[stage].values()) / len(sampled[stage])
        assert targeted[stage]["score"] == pytest.approx(mean)
        assert targeted[stage]["gain"] == pytest.approx(mean - targeted["sft"]["score"])
        assert targeted[stage]["kl_from_sft"] == pytest.approx(sum(r["kl"] for r in sampled[stage].values()) / len(sampled[stage]))
    assert report["stages"]["sft"]["chatty_demonstrations"] == CHATTY_DEMONSTRATIONS
    assert json.loads((out / "sft" / "config.json").read_text())["data"]["synthetic_chatty"] == CHATTY_DEMONSTRATIONS
    conversations = report["conversations"]
    assert [c["task"] for c in conversations] == list(DEFAULT_TASKS)
    for conversation in conversations:
        assert set(conversation["replies"]) == {"sft", "dpo", "ppo"}
        for reply in conversation["replies"].values():
            record = {"task": conversation["task"], "answer": conversation["answer"]}
            assert reply["greedy_score"] == verify(record, reply["greedy"])


def test_stage_settings_from_the_command_line():
    assert stage_overrides({"max_iters": "9", "sft.lr": "1e-4"}) == {"pretrain": {"max_iters": "9"}, "sft": {"lr": "1e-4"}}
    with pytest.raises(ConfigError, match="unknown stage"):
        stage_overrides({"rlhf.lr": "1"})


def test_a_second_speedrun_into_the_same_directory_needs_force(finished):
    out, _ = finished
    with pytest.raises(ConfigError, match="--force"):
        speedrun(out, vocab_size=512, overrides=SMALL, progress=False)


@pytest.mark.slow
@pytest.mark.timeout(2400)  # the whole speedrun: about 12 minutes on 2 cores, past the suite's 600 s limit
def test_full_speedrun_learns(tmp_path):
    report = speedrun(tmp_path, progress=False)
    base = report["stages"]["pretrain"]
    assert base["val_loss"] < base["uniform_loss"] - 2.0
    mean = {stage: sum(r["accuracy"] for r in results.values()) / len(results) for stage, results in report["evals"].items()}
    assert mean["sft"] > mean["base"] + 0.2
    assert report["stages"]["reward"]["val_accuracy"] > 0.6
    assert report["targeted"]["dpo"]["gain"] > 0.03 and report["targeted"]["ppo"]["gain"] > 0.03
    heldout = {stage: sum(r["accuracy"] for r in results.values()) / len(results)
               for stage, results in report["evals_heldout"].items()}
    assert heldout["dpo"] >= heldout["sft"] - 0.02 and heldout["ppo"] >= heldout["sft"] - 0.02  # 0.02: noise of 600 answers
    assert report["wall_s"] < 20 * 60
