"""The safety task and Llama 2's two preference sets built on it. (What every task must do, the
safety task included, is in test_tasks.py and test_tasks_heldout.py.)"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from groklm.tasks import DEFAULT_TASKS, TASKS, make_sft, verify
from groklm.tasks.preference_sets import HARMLESS_OTHERS, REFUSAL_SHARE, make_harmless_preferences, make_helpful_preferences
from groklm.tasks.safety import REFUSAL, TOPICS, is_refusal
from groklm.train.preferences import load_pairs

SAFETY = TASKS["safety"]


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def test_half_the_requests_are_unsafe_and_the_tag_says_which():
    records = SAFETY.rl_prompts(400, "train", 0)
    assert 0.4 < sum(r["unsafe"] for r in records) / len(records) < 0.6
    assert all(r["unsafe"] == (r["answer"] == REFUSAL) for r in records)
    assert all(r["unsafe"] == (r["chosen"] == REFUSAL) for r in SAFETY.preferences(100, "test", 0))
    assert all(r["unsafe"] == (r["choices"][r["answer_index"]] == REFUSAL) for r in SAFETY.choices(100, "test", 0))
    # safe requests are answered, each with its own words (the place, the name, the drink)
    answers = {r["answer"] for r in records if not r["unsafe"]}
    assert len(answers) > 50 and not any(is_refusal(a) for a in answers)


def test_unsafe_and_safe_requests_look_alike():
    """Each topic's unsafe and safe wordings share content words: refusing on a word fails half the time."""
    for topic, (unsafe, safe) in TOPICS.items():
        shared = words(" ".join(unsafe.seen)) & words(" ".join(safe.seen)) - {"how", "do", "i", "the", "to", "a", "me"}
        assert shared, topic


def test_unsafe_distractors_comply_and_safe_ones_include_the_refusal():
    for problem in SAFETY.problems(200, "train", 0):
        reply = problem.replies[-1]
        if reply.answer == REFUSAL:
            assert reply.distractors and not any(is_refusal(d) for d in reply.distractors)  # all comply
            assert all(verify({"task": "safety", "answer": REFUSAL}, d) == 0.0 for d in reply.distractors)
        else:
            assert REFUSAL in reply.distractors  # over-refusal is a wrong answer


def test_refusals_are_recognised():
    assert is_refusal(REFUSAL) and is_refusal("  sorry, no.") and is_refusal("I cannot do that.")
    assert not is_refusal("Sure, here is how.") and not is_refusal("Name: Ann, Age: 20") and not is_refusal("")


def test_safety_is_not_in_the_default_mix():
    assert "safety" in TASKS and "safety" not in DEFAULT_TASKS
    assert {r["task"] for r in make_sft(None, 5)} == set(DEFAULT_TASKS)
    assert {r["task"] for r in make_sft(["safety", "spam"], 5)} == {"safety", "spam"}


def test_helpful_set_prefers_right_answers_and_never_sees_unsafe_prompts():
    pairs = make_helpful_preferences(None, 200, "train", 0)
    assert pairs == make_helpful_preferences(None, 200, "train", 0) != make_helpful_preferences(None, 200, "train", 1)
    assert Counter(p["task"] for p in pairs) == {t: 200 for t in TASKS}  # every task, safety's safe half included
    assert not any(p["unsafe"] for p in pairs) and not any(p["chosen"] == REFUSAL for p in pairs)
    for pair in pairs:
        record = {"task": pair["task"], "answer": pair["chosen"]}
        assert verify(record, pair["chosen"]) == 1.0 and verify(record, pair["rejected"]) < 1.0
    refused = sum(p["rejected"] == REFUSAL for p in pairs if p["task"] != "safety") / (200 * len(DEFAULT_TASKS))
    assert abs(refused - REFUSAL_SHARE) < 0.05  # unneeded refusals are among the rejected replies
    assert {p["task"] for p in make_helpful_preferences(["spam"], 5)} == {"spam"}


def test_harmless_set_refuses_unsafe_answers_safe_and_never_prefers_a_refusal_elsewhere():
    pairs = make_harmless_preferences(None, 300, "train", 0)
    assert pairs == make_harmless_preferences(None, 300, "train", 0)
    counts = Counter(p["task"] for p in pairs)
    assert counts["safety"] == 300 and all(counts[t] == round(HARMLESS_OTHERS * 300) for t in DEFAULT_TASKS)
    unsafe = [p for p in pairs if p["unsafe"]]
    assert 0.4 < len(unsafe) / 300 < 0.6
    assert all(p["chosen"] == REFUSAL and not is_refusal(p["rejected"]) for p in unsafe)
    # everywhere else the refusal is the rejected reply: "always refuse" loses half the pairs
    assert all(p["rejected"] == REFUSAL and verify(p | {"answer": p["chosen"]}, p["chosen"]) == 1.0
               for p in pairs if not p["unsafe"])


@pytest.mark.parametrize("spec, tasks", [("synthetic-helpful", set(TASKS)), ("synthetic-harmless:safety", {"safety"}),
                                         ("synthetic-helpful:spam,safety", {"spam", "safety"})])
def test_reward_stages_read_the_sets_by_name(spec, tasks):
    train, val = load_pairs(spec)
    assert {p["task"] for p in train} == {p["task"] for p in val} == tasks
    assert not {str(p["prompt"]) for p in train} & {str(p["prompt"]) for p in val}  # its own test split
