"""What every synthetic task is made of: problems, the train/test rule, shared words, rewards.

A task is a generator of `Problem`s (one random conversation, with the replies a verifier can
grade) and a reward that grades a reply. `Task` turns that pair into the four record kinds
(SFT, preferences, RL prompts, multiple choice) for a split and a seed, the same every time.

Train and test never share a problem: a problem's split is a hash of its canonical key (the
numbers of a sum, the text of an email, the facts of a sentence), never of the seed, so the
test set holds sums, emails and people that no training set, of any seed, contains.

Nor do they share every wording. Each way a task says something (an email, a story, an
instruction) is a `Forms`: wordings train and test draw from, and held-out wordings that only
the third split, "heldout", uses: test problems written in words no training record contains.
Test measures what a model learned of the problems it was taught in; heldout measures whether
it learned the task or the templates (a classifier that recalls five spam templates scores
perfectly on test and guesses on a spam email written another way).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from groklm.errors import ConfigError, DataError

HELDOUT = "heldout"  # test problems, in held-out wordings
SPLITS = ("train", "test", HELDOUT)
TEST_PERCENT = 20  # share of problem keys that belong to the test split (and the heldout one)

SYSTEM_PROMPTS = ("You are a helpful assistant.", "Answer briefly.", "Be exact.")

NAMES = (
    "Tom Ann Maria Ben Sara Leo Mia Omar Lena Raj Yuki Ivan Nora Paul Emma Sam Lucy Hugo Zoe Max "
    "Ava Eli Ines Kai Rosa Finn Amir Lily Noah Iris Jack Olga Theo Anya Luis Nina Adam Ella Igor Jade"
).split()


@dataclass
class GradedReply:
    """One assistant reply a verifier grades: the messages before it, the right reply, and wrong ones."""

    prompt: list[dict]
    answer: str
    distractors: list[str]  # plausible, well-formatted wrong replies (multiple-choice options)
    malformed: list[str] = field(default_factory=list)  # right-ish content, wrong format


@dataclass
class Problem:
    key: str  # canonical identity: decides the split, never shown to the model
    messages: list[dict]  # the whole conversation, for SFT
    replies: list[GradedReply]  # the replies that can be graded (the tool task has two)
    chatty: str  # the last reply as a wordier writer puts it: right content, not the asked-for format


@dataclass(frozen=True)
class Forms:
    """The wordings of one thing a task says, as str.format templates. `seen` make the train and
    test records; `held_out` (about a quarter) make only the heldout split's."""

    seen: tuple[str, ...]
    held_out: tuple[str, ...]

    def pick(self, rng: random.Random, held_out: bool, **fields) -> str:
        """One wording of the split's side, filled with `fields`."""
        return rng.choice(self.held_out if held_out else self.seen).format(**fields)


def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def split_of(task: str, key: str) -> str:
    """"train" or "test": a fixed function of the problem, so no seed can leak one into the other.
    (A heldout problem is a test problem: its key is on the test side.)"""
    digest = hashlib.sha256(f"{task}:{key}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") % 100 < TEST_PERCENT else "train"


def maybe_system(rng: random.Random) -> list[dict]:
    """A system prompt on a quarter of the examples, so models see both shapes."""
    return [msg("system", rng.choice(SYSTEM_PROMPTS))] if rng.random() < 0.25 else []


def single_turn(key: str, rng: random.Random, user: str, answer: str, chatty: str, distractors, malformed=()) -> Problem:
    """A problem of one user message and one graded reply (with a system prompt now and then)."""
    prompt = [*maybe_system(rng), msg("user", user)]
    distinct = [d for d in dict.fromkeys(distractors) if d != answer]
    reply = GradedReply(prompt, answer, distinct, list(dict.fromkeys([chatty, *malformed])))
    return Problem(key, [*prompt, msg("assistant", answer)], [reply], chatty)


def near_numbers(value: int, *others: int) -> list[str]:
    """Wrong numbers a model might say instead of `value` (never negative)."""
    return [str(v) for v in (value + 1, value - 1 if value > 0 else value + 2, *others) if v >= 0]


# ---- rewards shared by several tasks -----------------------------------------------------------

INTEGER_RE = re.compile(r"-?\d+")


def number_reward(expected: str, completion: str) -> float:
    """1.0 the exact integer; 0.5 the right integer with extra words; 0.1 a bare wrong integer."""
    text = completion.strip()
    if text == expected:
        return 1.0
    numbers = INTEGER_RE.findall(text)
    if numbers == [expected]:
        return 0.5  # right value, extra words
    if INTEGER_RE.fullmatch(text):
        return 0.1  # right format, wrong value
    return 0.0


def exact_reward(expected: str, completion: str) -> float:
    """All or nothing: "This is spam." is not the format that was asked for."""
    return 1.0 if completion.strip() == expected else 0.0


def mixed_reward(expected: str, completion: str) -> float:
    """Number rules when the answer is a number, exact match otherwise (instruct, multiturn)."""
    return number_reward(expected, completion) if INTEGER_RE.fullmatch(expected) else exact_reward(expected, completion)


# ---- tasks --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """A named problem generator, the reward that grades replies to it, and the wordings it uses.

    generate(rng, held_out) writes one problem, in held-out wordings when `held_out` is true;
    `forms` lists every `Forms` it draws from (what the tests check the splits against)."""

    name: str
    generate: Callable[[random.Random, bool], Problem]
    reward: Callable[[str, str], float]
    forms: tuple[Forms, ...]

    def problems(self, n: int, split: str, seed: int) -> list[Problem]:
        """n problems of `split`, drawn with a seed-determined rng; other-split draws are dropped."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
        rng = random.Random(f"{self.name}/{split}/{seed}")
        held_out = split == HELDOUT
        key_split = "test" if held_out else split
        out: list[Problem] = []
        for _ in range(100 * n + 1000):
            if len(out) == n:
                return out
            problem = self.generate(rng, held_out)
            if split_of(self.name, problem.key) == key_split:
                out.append(problem)
        raise DataError(f"task {self.name}: could not draw {n} {split} problems")

    def _graded(self, n: int, split: str, seed: int) -> Iterator[tuple[Problem, GradedReply, random.Random]]:
        """(problem, graded reply, rng) triples; the rng makes per-record choices reproducible."""
        rng = random.Random(f"{self.name}/{split}/{seed}/stages")
        for problem in self.problems(n, split, seed):
            yield problem, rng.choice(problem.replies), rng

    def sft(self, n: int, split: str = "train", seed: int = 0, chatty: float = 0.0) -> list[dict]:
        """Whole conversations; a `chatty` share of them ends in the wordier reply instead."""
        if not 0 <= chatty <= 1:
            raise ConfigError(f"chatty is a share of the demonstrations, in [0, 1]; got {chatty}")
        rng = random.Random(f"{self.name}/{split}/{seed}/chatty")
        records = []
        for problem in self.problems(n, split, seed):
            messages = problem.messages
            if rng.random() < chatty:
                messages = [*messages[:-1], msg("assistant", problem.chatty)]
            records.append({"task": self.name, "messages": messages})
        return records

    def preferences(self, n: int, split: str = "train", seed: int = 0) -> list[dict]:
        return [
            {"task": self.name, "prompt": reply.prompt, "chosen": reply.answer,
             "rejected": rng.choice(reply.distractors + reply.malformed)}
            for _, reply, rng in self._graded(n, split, seed)
        ]

    def rl_prompts(self, n: int, split: str = "train", seed: int = 0) -> list[dict]:
        return [{"task": self.name, "prompt": r.prompt, "answer": r.answer} for _, r, _ in self._graded(n, split, seed)]

    def choices(self, n: int, split: str = "test", seed: int = 0) -> list[dict]:
        """Multiple choice: the right reply among up to three well-formatted wrong ones."""
        records = []
        for problem, _, rng in self._graded(n, split, seed):
            reply = problem.replies[-1]  # the final answer (the tool task's call is not a choice)
            options = [reply.answer, *reply.distractors[:3]]
            rng.shuffle(options)
            answer_index = options.index(reply.answer)
            records.append({"task": self.name, "prompt": reply.prompt, "choices": options, "answer_index": answer_index})
        return records

    def verify(self, record: dict, completion: str) -> float:
        return self.reward(record["answer"], completion)
