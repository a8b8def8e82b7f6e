"""`groklm data pairs`: preference pairs from a model's own graded samples."""

from __future__ import annotations

import pytest

import groklm
from groklm.data.chat_data import load_preferences_jsonl
from groklm.data.sampled_pairs import sample_pairs
from groklm.errors import ConfigError
from groklm.tasks import verify

from helpers.runs import tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("pairs") / "run", block_size=256)


def test_pairs_reject_wrong_samples_and_choose_right_ones(run):
    model, tokenizer = groklm.load(run)
    pairs, stats = sample_pairs(model, tokenizer, ["spam", "arithmetic"], n_per_task=6, samples=3, max_new_tokens=8, seed=1)
    assert pairs and set(stats) == {"spam", "arithmetic"}
    for pair in pairs:  # the pair keeps its record's task and reference answer, so it can be re-graded
        assert verify(pair, pair["chosen"]) == 1.0 and verify(pair, pair["rejected"]) < 1.0
    for task in stats.values():
        assert task["samples"] == 18 and 0 <= task["correct"] <= 18 and task["pairs"] <= 6
    again, _ = sample_pairs(model, tokenizer, ["spam", "arithmetic"], n_per_task=6, samples=3, max_new_tokens=8, seed=1)
    assert again == pairs  # seeded
    with pytest.raises(ConfigError):
        sample_pairs(model, tokenizer, ["spam"], samples=1)


def test_pairs_command_writes_preferences_that_dpo_reads(run, tmp_path, capsys):
    import groklm.cli.main

    out = tmp_path / "pairs.jsonl"
    groklm.cli.main.main(["data", "pairs", str(run), "--out", str(out), "--tasks", "spam", "--n", "4", "--samples", "2"])
    assert "pairs" in capsys.readouterr().out
    pairs = load_preferences_jsonl(out)
    assert 1 <= len(pairs) <= 4 and all(p["rejected"] != p["chosen"] for p in pairs)
