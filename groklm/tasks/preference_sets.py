"""Llama 2's two preference sets, one per reward model: helpfulness and harmlessness.

One reward model asked to be both helpful and harmless is pulled two ways on the same prompts
(an unsafe request is answered "helpfully" by complying); Llama 2 trains one on each question
and lets PPO pick between them per answer (groklm.train.rl.rewards). The sets, from the
synthetic tasks (every task when none are named), with the same record shape as
make_preferences and the safety task's "unsafe" tag on every pair:

    helpful   every safe prompt: chosen the right answer; rejected the task's own wrong reply
              or, in REFUSAL_SHARE of the pairs, a refusal the prompt did not need. Unsafe
              prompts are left out: what helps there is the other model's question.
    harmless  the safety task's prompts: unsafe, chosen the refusal and rejected a compliant
              reply; safe look-alike, chosen the answer and rejected the refusal, so that
              "always refuse" does not win. Plus HARMLESS_OTHERS as many pairs per other task,
              answer over refusal: the safety model also sees the prompts PPO will ask it to
              grade, and learns that refusing them is no safer (Llama 2 mixed a tenth of
              helpfulness data into its safety set for the same reason).

Neither set grades a right answer against a wrong one on the harmless side: which sum is right
is the helpful model's question. `groklm reward RUN --data synthetic-helpful[:TASKS]` and
`--data synthetic-harmless[:TASKS]` train on them (groklm.train.preferences.load_pairs).
"""

from __future__ import annotations

import random

from groklm.tasks import TASKS, TaskNames, get_tasks
from groklm.tasks.safety import REFUSAL

REFUSAL_SHARE = 0.25  # of the helpful set's pairs: the rejected reply is an unneeded refusal
HARMLESS_OTHERS = 0.1  # pairs per non-safety task in the harmless set, as a share of n_per_task


def _tasks(names: TaskNames):
    return get_tasks(list(TASKS) if names is None else names)


def _shuffled(records: list[dict], kind: str, split: str, seed: int) -> list[dict]:
    random.Random(f"{kind}/{split}/{seed}").shuffle(records)
    return records


def make_helpful_preferences(tasks: TaskNames = None, n_per_task: int = 1000, split: str = "train",
                             seed: int = 0) -> list[dict]:
    """The helpfulness reward model's pairs (module docstring); n_per_task safe pairs per task."""
    rng = random.Random(f"helpful/{split}/{seed}/refusals")
    records = []
    for task in _tasks(tasks):
        # the safety task's records are half unsafe: draw twice as many and keep the safe ones
        draw = task.preferences(2 * n_per_task if task.name == "safety" else n_per_task, split, seed)
        for record in [r for r in draw if not r.get("unsafe")][:n_per_task]:
            rejected = REFUSAL if rng.random() < REFUSAL_SHARE else record["rejected"]
            records.append({**record, "rejected": rejected, "unsafe": False})
    return _shuffled(records, "helpful", split, seed)


def make_harmless_preferences(tasks: TaskNames = None, n_per_task: int = 1000, split: str = "train",
                              seed: int = 0) -> list[dict]:
    """The harmlessness reward model's pairs (module docstring): n_per_task safety pairs, and
    HARMLESS_OTHERS of that per other task."""
    rng = random.Random(f"harmless/{split}/{seed}/compliance")
    records = []
    for task in _tasks(tasks):
        if task.name == "safety":
            for problem in task.problems(n_per_task, split, seed):
                reply = problem.replies[-1]
                unsafe = reply.answer == REFUSAL
                # an unsafe prompt's distractors all comply (the compliance, the look-alike's answer)
                rejected = rng.choice(reply.distractors) if unsafe else REFUSAL
                records.append({"task": task.name, "prompt": reply.prompt, "chosen": reply.answer,
                                "rejected": rejected, "unsafe": unsafe})
        else:
            n = max(1, round(HARMLESS_OTHERS * n_per_task))
            records += [{"task": r["task"], "prompt": r["prompt"], "chosen": r["answer"], "rejected": REFUSAL,
                         "unsafe": False} for r in task.rl_prompts(n, split, seed)]
    return _shuffled(records, "harmless", split, seed)
