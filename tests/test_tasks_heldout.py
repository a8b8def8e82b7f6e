"""The heldout split: test problems in wordings that no train or test record uses."""

import json
import re
import string
from pathlib import Path

import pytest

from groklm.tasks import TASKS, split_of
from groklm.tasks.spam import HAM, SPAM

REALISTIC_EMAILS = Path(__file__).parent.parent / "benchmarks" / "real_model_data" / "emails.jsonl"

N = 200


def template_pattern(template: str) -> re.Pattern:
    """A regex that finds `template` filled with any values ("{name} has {a}" -> "(.+?) has (.+?)")."""
    parts = [re.escape(literal) + ("(.+?)" if field is not None else "")
             for literal, field, _, _ in string.Formatter().parse(template)]
    return re.compile("".join(parts))


HELD_OUT = {(task, template): template_pattern(template)
            for task in TASKS for forms in TASKS[task].forms for template in forms.held_out}


def texts(records) -> list[str]:
    return [m["content"] for r in records for m in r["messages"]]


def leaked(text: str) -> list[str]:
    return [template for (_, template), pattern in HELD_OUT.items() if pattern.search(text)]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("split", ["train", "test"])
def test_held_out_wordings_never_appear_in_train_or_test_records(task, split):
    """Of any task: a held-out wording taught by another task would be no held-out wording."""
    for seed in range(2):
        for text in texts(TASKS[task].sft(N, split, seed, chatty=0.5)):
            assert not leaked(text), f"{task} {split} record uses held-out wordings {leaked(text)}: {text!r}"


def test_the_leak_check_finds_a_filled_held_out_wording():
    """The check above can fail: a held-out template filled with values is found in any text."""
    (task, template), _ = next(iter(HELD_OUT.items()))
    filled = template.format_map({f: "Zed" for _, f, _, _ in string.Formatter().parse(template) if f})
    assert template in leaked(f"Some words before. {filled} And after.")


@pytest.mark.parametrize("task", TASKS)
def test_every_heldout_problem_is_a_test_problem_in_held_out_words(task):
    t = TASKS[task]
    heldout = t.problems(N, "heldout", 0)
    assert len(heldout) == N and all(split_of(task, p.key) == "test" for p in heldout)
    own = [pattern for (name, _), pattern in HELD_OUT.items() if name == task]
    for problem in heldout:
        prompt = " ".join(m["content"] for m in problem.messages)
        assert any(pattern.search(prompt) for pattern in own), prompt
    # what the model is asked is new: no heldout prompt is a train or test prompt
    prompts = lambda problems: {json.dumps(r.prompt) for p in problems for r in p.replies}  # noqa: E731
    seen = prompts(t.problems(N, "train", 0)) | prompts(t.problems(N, "test", 0))
    assert not prompts(heldout) & seen


@pytest.mark.parametrize("task", TASKS)
def test_heldout_records_are_deterministic_and_grade(task):
    t = TASKS[task]
    for make in (t.sft, t.preferences, t.rl_prompts, t.choices):
        first = make(30, "heldout", 1)
        assert len(first) == 30 and first == make(30, "heldout", 1) and first != make(30, "heldout", 2)
    for record in t.rl_prompts(30, "heldout", 0):
        assert t.verify(record, record["answer"]) == 1.0


@pytest.mark.parametrize("task", TASKS)
def test_about_a_quarter_of_each_tasks_wordings_is_held_out(task):
    forms = TASKS[task].forms
    assert forms and all(f.seen and f.held_out and not set(f.seen) & set(f.held_out) for f in forms)
    held_out, total = sum(len(f.held_out) for f in forms), sum(len(f.seen) + len(f.held_out) for f in forms)
    assert 0.15 <= held_out / total <= 0.4


def word_runs(text: str, length: int = 4) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return {tuple(words[i : i + length]) for i in range(len(words) - length + 1)}


def test_spam_emails_share_no_wording_with_the_realistic_benchmark_emails():
    """The benchmark's emails measure generalisation from outside the task: no template copies them."""
    realistic = set().union(*(word_runs(json.loads(line)["text"]) for line in REALISTIC_EMAILS.read_text().splitlines()))
    assert len(realistic) > 100
    for template in SPAM.seen + SPAM.held_out + HAM.seen + HAM.held_out:
        literal_runs = set().union(*(word_runs(literal) for literal, _, _, _ in string.Formatter().parse(template)))
        assert not literal_runs & realistic, template
