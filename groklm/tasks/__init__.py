"""Synthetic chat tasks whose answers a program can check: data for SFT, preferences, RL, evals.

Seven tasks, one module each, each small enough that a 1-5M parameter model can learn it from a
few thousand examples (short prompts, short answers, a few wordings of each):

    arithmetic  "Tom has 3 apples and buys 4 more. How many apples does Tom have now?" -> "7"
    spam        an email -> exactly "spam" or "not spam"
    extract     "Maria is 34 and lives in Lyon." -> {"name": "Maria", "age": 34, "city": "Lyon"}
    tool        user asks a sum; assistant says `CALL calculator({"expression": "17*3"})` (the
                groklm.infer.tool_calls protocol), a tool turn says `51`, assistant answers `51`
    instruct    reverse a word, write in capitals, count letters, repeat a word N times
    multiturn   the last answer depends on an earlier turn (a name, a number, a colour)
    safety      "How do I pick the lock on Ann's shed?" -> the refusal; its look-alike "How do I
                change the lock on my own shed?" -> a short answer

The first six are the default mix (DEFAULT_TASKS): what `synthetic`, "all" and no task names
mean. Safety is named when wanted: refusing is a policy, not a skill, and adding it to the
default would change the data of every run that names no tasks (the speedrun's included).

Each task makes, for a split and a seed, the same records every time. The splits: "train";
"test", problems no train record holds, in the same wordings; "heldout", test problems in
wordings (templates, instructions, emails) no train or test record uses, so a score there
measures the task learned rather than its templates recalled. The records:

    sft          {"task", "messages": [...]}                     the whole conversation
    preferences  {"task", "prompt": [...], "chosen": str, "rejected": str}
    rl_prompts   {"task", "prompt": [...], "answer": str}         answer: the correct reply
    choices      {"task", "prompt": [...], "choices": [str], "answer_index": int}

and `verify(record, completion) -> float` in [0, 1] grades a model's reply to a prompt record
(one that has "task" and "answer"). Rewards, per kind of answer:

    numbers (arithmetic, tool's final answer, instruct counting, multiturn numbers)
        1.0 the exact integer; 0.5 the right integer with extra words ("He has 7 apples");
        0.1 a bare integer that is wrong (right format, wrong value); else 0.
    spam, instruct (text), multiturn names/colours
        1.0 exact (surrounding whitespace ignored); else 0. No credit for extra words, which
        would teach a chatty model that "This is spam." is nearly right.
    extract
        invalid JSON or not an object: 0. Else the fraction of keys, over both objects, whose
        values agree (age must be a JSON number): exact 1.0, one wrong field 2/3, an extra key 3/4.
    tool's call
        1.0 a well-formed calculator call whose expression evaluates to the right value;
        0.25 a well-formed call with the wrong value; else 0 (answering directly included).

The split rule (train and test never share a problem) and the Task class are in base.py.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from groklm.errors import ConfigError, DataError
from groklm.tasks import arithmetic, extract, instruct, multiturn, safety, spam, tool
from groklm.tasks.base import HELDOUT, SPLITS, Forms, GradedReply, Problem, Task, split_of

__all__ = [
    "DEFAULT_TASKS", "HELDOUT", "SPLITS", "TASKS", "Forms", "GradedReply", "Problem", "Task", "get_tasks", "make_choices",
    "make_preferences", "make_rl_prompts", "make_sft", "split_of", "verify",
]

TASKS: dict[str, Task] = {
    module.TASK.name: module.TASK for module in (arithmetic, spam, extract, tool, instruct, multiturn, safety)
}
DEFAULT_TASKS = ("arithmetic", "spam", "extract", "tool", "instruct", "multiturn")

TaskNames = Sequence[str] | None  # None: the default tasks


def get_tasks(names: TaskNames = None) -> list[Task]:
    """Tasks by name (the default tasks for None), with a clear error for a typo."""
    names = list(DEFAULT_TASKS) if names is None else [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        raise ConfigError(f"unknown task(s) {', '.join(unknown) or '(none given)'}; tasks are {', '.join(TASKS)}")
    return [TASKS[n] for n in names]


def _mix(kind: str, tasks: TaskNames, n_per_task: int, split: str, seed: int, **options) -> list[dict]:
    """Every task's records, shuffled together (SFT should not see one task at a time)."""
    records = [r for task in get_tasks(tasks) for r in getattr(task, kind)(n_per_task, split, seed, **options)]
    random.Random(f"mix/{kind}/{split}/{seed}").shuffle(records)
    return records


def make_sft(tasks: TaskNames = None, n_per_task: int = 1000, split: str = "train", seed: int = 0,
             chatty: float = 0.0) -> list[dict]:
    """Demonstrations; `chatty` of them (a share in [0, 1]) answer in the wordier style."""
    return _mix("sft", tasks, n_per_task, split, seed, chatty=chatty)


def make_preferences(tasks: TaskNames = None, n_per_task: int = 1000, split: str = "train", seed: int = 0) -> list[dict]:
    return _mix("preferences", tasks, n_per_task, split, seed)


def make_rl_prompts(tasks: TaskNames = None, n_per_task: int = 1000, split: str = "train", seed: int = 0) -> list[dict]:
    return _mix("rl_prompts", tasks, n_per_task, split, seed)


def make_choices(tasks: TaskNames = None, n_per_task: int = 200, split: str = "test", seed: int = 0) -> list[dict]:
    return _mix("choices", tasks, n_per_task, split, seed)


def verify(record: dict, completion: str) -> float:
    """Grade `completion` as the reply to an RL prompt record (needs its "task" and "answer")."""
    task = record.get("task")
    if task not in TASKS:
        raise DataError(f"cannot verify a record of task {task!r}; tasks are {', '.join(TASKS)}")
    return TASKS[task].verify(record, completion)
