"""The eval harness: task parsing, a rigged model whose answers and choices are known in
advance, a real tiny run end to end, and the `groklm eval` command."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn

from groklm.errors import ConfigError
from groklm.eval.harness import choice_logprobs, evaluate_model, evaluate_run, format_table, generate_answers, parse_tasks
from groklm.tasks import DEFAULT_TASKS, TASKS

from helpers.models import Rigged
from helpers.runs import ASCII, char_tokenizer, tiny_run


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer(ASCII)


def test_parse_tasks():
    assert parse_tasks("arithmetic, spam:mc") == ["arithmetic", "spam:mc"]
    assert parse_tasks("all") == list(DEFAULT_TASKS) and "safety" not in DEFAULT_TASKS  # safety is named when wanted
    assert parse_tasks("all:mc,spam:mc") == [t + ":mc" for t in DEFAULT_TASKS]
    assert parse_tasks("all,safety") == [*DEFAULT_TASKS, "safety"]
    with pytest.raises(ConfigError, match="unknown task 'arithmetc'"):
        parse_tasks("arithmetc")
    with pytest.raises(ConfigError, match="no tasks"):
        parse_tasks(" , ")


def test_choice_scorer_on_a_rigged_model(tokenizer):
    model = Rigged(tokenizer)
    messages = [{"role": "user", "content": "What is 3+4?"}]
    logp = choice_logprobs(model, tokenizer, messages, ["8", "7", "77", "17"])
    # "7" then <|im_end|>: two tokens each at logit 5 against V-1 logits of 0.
    best = 5 - math.log(math.exp(5) + tokenizer.vocab_size - 1)
    assert logp[1].item() == pytest.approx(2 * best, abs=1e-4)
    assert logp.argmax().item() == 1
    assert generate_answers(model, tokenizer, [messages]) == ["7"]


def test_harness_counts_and_scores_on_a_rigged_model(tokenizer):
    model = Rigged(tokenizer)
    results = evaluate_model(model, tokenizer, "arithmetic,arithmetic:mc", n=30, seed=0)
    records = TASKS["arithmetic"].rl_prompts(30, split="test", seed=0)
    expected = [TASKS["arithmetic"].verify(r, "7") for r in records]  # what "7" earns on each
    gen = results["arithmetic"]
    assert gen["kind"] == "generate" and gen["count"] == 30
    assert gen["correct"] == sum(s == 1.0 for s in expected)
    assert gen["mean_score"] == pytest.approx(sum(expected) / 30)
    mc = results["arithmetic:mc"]
    assert mc["kind"] == "choice" and mc["count"] == 30
    # Wherever "7" is an option the model picks it: right exactly when "7" is the answer.
    for record in TASKS["arithmetic"].choices(30, split="test", seed=0):
        if "7" in record["choices"]:
            picked = choice_logprobs(model, tokenizer, record["prompt"], record["choices"]).argmax().item()
            assert picked == record["choices"].index("7")
    assert 0 <= mc["mean_score"] <= 1


def test_sampled_eval_grades_every_sample_and_kl_to_itself_is_zero(tmp_path):
    import groklm

    run = tiny_run(tmp_path / "run", block_size=256)
    model, tokenizer = groklm.load(run)
    greedy = evaluate_model(model, tokenizer, "spam", n=3, seed=0, max_new_tokens=4)["spam"]
    sampled = evaluate_model(model, tokenizer, "spam", n=3, seed=0, max_new_tokens=4, temperature=1.0, samples=5,
                             reference=model)["spam"]
    assert greedy["kind"] == "generate" and greedy["count"] == 3 and "kl" not in greedy
    assert sampled["kind"] == "sample" and sampled["count"] == 15
    assert sampled["kl"] == pytest.approx(0.0, abs=1e-5)  # the same model: log p - log p_ref = 0 on every token
    again = evaluate_model(model, tokenizer, "spam", n=3, seed=0, max_new_tokens=4, temperature=1.0, samples=5)["spam"]
    assert again["mean_score"] == sampled["mean_score"]  # seeded samples
    with pytest.raises(ConfigError, match="temperature"):
        evaluate_model(model, tokenizer, "spam", n=3, temperature=-1.0)
    other = tiny_run(tmp_path / "other", ASCII + "é", block_size=256)  # another vocabulary
    with pytest.raises(ConfigError, match="another tokenizer"):
        evaluate_run(run, "spam", n=1, temperature=1.0, reference=other)


def test_answer_kl_is_the_sum_of_token_log_ratios(tmp_path):
    """Against a hand computation: the reference is the same network with its logits shifted
    on one token, so each reply's KL is sum over its tokens of log p - log p_ref."""
    import torch.nn.functional as F

    import groklm
    from groklm.eval.harness import answer_ids, answer_kl

    run = tiny_run(tmp_path / "run", block_size=256)
    model, tokenizer = groklm.load(run)

    class Shifted(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = model.config

        def forward(self, idx):
            logits, _ = model(idx)
            return logits + F.one_hot(torch.tensor(5), logits.size(-1)) * 2.0, None

    conversations = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "2+2?"}]]
    prompts, replies = answer_ids(model, tokenizer, conversations, max_new_tokens=6, temperature=1.0, seed=3)
    kls = answer_kl(model, Shifted(), prompts, replies)
    for prompt, reply, kl in zip(prompts, replies, kls):
        ids = torch.tensor([prompt + reply])
        with torch.no_grad():
            logp = F.log_softmax(model(ids)[0][0], dim=-1)
            ref = F.log_softmax(Shifted()(ids)[0][0], dim=-1)
        positions = range(len(prompt) - 1, len(prompt) + len(reply) - 1)
        expected = sum((logp[t, ids[0, t + 1]] - ref[t, ids[0, t + 1]]).item() for t in positions)
        assert kl == pytest.approx(expected, abs=1e-4)


def test_every_task_runs_on_a_tiny_model(tmp_path):
    run = tiny_run(tmp_path / "run", block_size=256)
    report = evaluate_run(run, "all,all:mc,safety,safety:mc", n=2, seed=1, max_new_tokens=4)
    assert set(report["tasks"]) == set(TASKS) | {t + ":mc" for t in TASKS}
    for result in report["tasks"].values():
        assert result["count"] == 2 and 0 <= result["accuracy"] <= 1 and 0 <= result["mean_score"] <= 1
    assert "arithmetic:mc" in format_table(report)


def test_eval_command(tmp_path, monkeypatch, capsys):
    import groklm.cli.main

    run = tiny_run(tmp_path / "run", block_size=256)
    groklm.cli.main.main(["eval", str(run), "--tasks", "spam,arithmetic:mc", "--n", "3", "--max-new-tokens", "3", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 3 and [r["count"] for r in report["tasks"].values()] == [3, 3]
    groklm.cli.main.main(["eval", str(run), "--tasks", "spam", "--n", "1", "--max-new-tokens", "2"])
    assert "spam" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        groklm.cli.main.main(["eval", str(run), "--tasks", "nope"])
    assert "unknown task" in capsys.readouterr().err
