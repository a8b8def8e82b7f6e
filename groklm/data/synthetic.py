"""Synthetic chat tasks whose answers a program can check: data for SFT, preferences, RL, evals.

Six tasks, each small enough that a 1-5M parameter model can learn it from a few thousand
examples (short prompts, short answers, fixed phrasings with some variety):

    arithmetic  "Tom has 3 apples and buys 4 more. How many apples does Tom have now?" -> "7"
    spam        an email -> exactly "spam" or "not spam"
    extract     "Maria is 34 and lives in Lyon." -> {"name": "Maria", "age": 34, "city": "Lyon"}
    tool        user asks a sum; assistant says `CALL calculator(17*3)`, a tool turn says `51`,
                assistant answers `51`
    instruct    reverse a word, write in capitals, count letters, repeat a word N times
    multiturn   the last answer depends on an earlier turn (a name, a number, a colour)

Each task makes, for a split ("train" or "test") and a seed, the same records every time:

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
        1.0 a well-formed `CALL calculator(EXPR)` whose EXPR evaluates to the right value;
        0.25 a well-formed call with the wrong value; else 0 (answering directly included).

Train and test never share a problem: a problem's split is a hash of its canonical key (the
numbers of a sum, the text of an email, the facts of a sentence), never of the seed, so the
test set holds sums, emails and people that no training set, of any seed, contains.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from groklm.calculator import INTEGER_RING, evaluate
from groklm.errors import ConfigError, DataError

SPLITS = ("train", "test")
TEST_PERCENT = 20  # share of problem keys that belong to the test split

SYSTEM_PROMPTS = ("You are a helpful assistant.", "Answer briefly.", "Be exact.")
TOOL_SYSTEM = "You can use a calculator: CALL calculator(EXPR)"

NAMES = (
    "Tom Ann Maria Ben Sara Leo Mia Omar Lena Raj Yuki Ivan Nora Paul Emma Sam Lucy Hugo Zoe Max "
    "Ava Eli Ines Kai Rosa Finn Amir Lily Noah Iris Jack Olga Theo Anya Luis Nina Adam Ella Igor Jade"
).split()
CITIES = (
    "Lyon Paris Rome Oslo Lima Cairo Tokyo Berlin Madrid Dublin Vienna Prague Lisbon Delhi Seoul "
    "Boston Quito Dakar Riga Porto Kyiv Milan Nice Bern"
).split()
ITEMS = "apples pencils books coins marbles cookies stickers cards shells eggs".split()
WORDS = (
    "cat dog sun tree book fish milk rain star moon bird lamp door cake ship road fire snow hand "
    "apple green house river music table water chair plant cloud stone light happy paper orange "
    "garden window yellow purple silver rabbit pocket candle bridge summer winter forest"
).split()
COLORS = "red blue green yellow purple orange black white pink brown".split()


@dataclass
class Stage:
    """One graded assistant reply: the messages before it, the right reply, and wrong ones."""

    prompt: list[dict]
    answer: str
    distractors: list[str]  # plausible, well-formatted wrong replies (multiple-choice options)
    malformed: list[str] = field(default_factory=list)  # right-ish content, wrong format


@dataclass
class Problem:
    key: str  # canonical identity: decides the split, never shown to the model
    messages: list[dict]  # the whole conversation, for SFT
    stages: list[Stage]  # the replies that can be graded (the tool task has two)
    chatty: str  # the last reply as a wordier writer puts it: right content, not the asked-for format


def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def split_of(task: str, key: str) -> str:
    """"train" or "test": a fixed function of the problem, so no seed can leak one into the other."""
    digest = hashlib.sha256(f"{task}:{key}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") % 100 < TEST_PERCENT else "train"


def _maybe_system(rng: random.Random) -> list[dict]:
    """A system prompt on a quarter of the examples, so models see both shapes."""
    return [msg("system", rng.choice(SYSTEM_PROMPTS))] if rng.random() < 0.25 else []


def _single_turn(key: str, rng: random.Random, user: str, answer: str, chatty: str, distractors, malformed=()) -> Problem:
    prompt = [*_maybe_system(rng), msg("user", user)]
    distinct = [d for d in dict.fromkeys(distractors) if d != answer]
    stage = Stage(prompt, answer, distinct, list(dict.fromkeys([chatty, *malformed])))
    return Problem(key, [*prompt, msg("assistant", answer)], [stage], chatty)


def _near_numbers(value: int, *others: int) -> list[str]:
    return [str(v) for v in (value + 1, value - 1 if value > 0 else value + 2, *others) if v >= 0]


# ---------------------------------------------------------------- generators (one per task)


def gen_arithmetic(rng: random.Random) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    op = rng.choice("+-*")
    if op == "+":
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        value, wrong_op = a + b, abs(a - b)
        story = rng.choice(
            [f"{name} has {a} {item} and buys {b} more.", f"{name} has {a} {item} and finds {b} more.",
             f"{name} had {a} {item}. A friend gave {name} {b} more."]
        )
    elif op == "-":
        a = rng.randint(2, 20)
        b = rng.randint(1, a - 1)
        value, wrong_op = a - b, a + b
        story = rng.choice(
            [f"{name} has {a} {item} and gives away {b}.", f"{name} has {a} {item} and loses {b}.",
             f"{name} had {a} {item} and sold {b} of them."]
        )
    else:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        value, wrong_op = a * b, a + b
        story = rng.choice(
            [f"{name} has {a} boxes with {b} {item} in each.", f"{name} buys {a} bags of {b} {item}."]
        )
    question = rng.choice([f"How many {item} does {name} have now?", f"How many {item} does {name} have?"])
    answer = str(value)
    return _single_turn(
        f"{op}:{a}:{b}", rng, f"{story} {question}", answer, f"{name} has {value} {item}.",
        _near_numbers(value, wrong_op), [f"The answer is {value}."],
    )


SPAM_TEMPLATES = (
    "Congratulations {name}! You won a {prize}. Click {link} to claim it now.",
    "URGENT: your account is locked. Send your password to {link} today.",
    "Cheap {prize} for you! {pct}% off, only today. Buy now at {link}",
    "Dear {name}, you have been selected for a free {prize}. Reply with your bank details.",
    "Earn {pct}00 dollars a day from home! Visit {link} now.",
)
HAM_TEMPLATES = (
    "Hi {name}, can we move the meeting to {day} at {hour}?",
    "Thanks for the {thing} yesterday, {name}. See you on {day}.",
    "Reminder: the {thing} report is due on {day}.",
    "Hi {name}, lunch on {day}? I can book a table for {hour}.",
    "{name}, I left the {thing} on your desk. Call me on {day}.",
)
PRIZES = "phone car laptop cruise watch prize gift card".split()
LINKS = ("www.win-now.biz", "bit.ly/free", "claim-prize.net", "secure-login.info", "best-deal.xyz")
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
THINGS = "budget sales project notes slides dinner book".split()


def gen_spam(rng: random.Random) -> Problem:
    is_spam = rng.random() < 0.5
    fill = dict(
        name=rng.choice(NAMES), prize=rng.choice(PRIZES), link=rng.choice(LINKS), pct=rng.randint(2, 9) * 10,
        day=rng.choice(DAYS), hour=f"{rng.randint(9, 17)}:00", thing=rng.choice(THINGS),
    )
    email = rng.choice(SPAM_TEMPLATES if is_spam else HAM_TEMPLATES).format(**fill)
    ask = rng.choice(
        ["Is this email spam? Answer spam or not spam.", "Spam or not spam?", "Classify this email as spam or not spam."]
    )
    answer = "spam" if is_spam else "not spam"
    other = "not spam" if is_spam else "spam"
    return _single_turn(
        email, rng, f"{ask}\n{email}", answer, f"This email is {answer}.", [other],
        [answer.capitalize() + "!", f"{answer}, because it looks like {answer}"],
    )


def gen_extract(rng: random.Random) -> Problem:
    name, age, city = rng.choice(NAMES), rng.randint(18, 80), rng.choice(CITIES)
    sentence = rng.choice(
        [f"{name} is {age} and lives in {city}.", f"{name}, {age}, lives in {city}.",
         f"Meet {name} from {city}, who is {age} years old.", f"{city} is home to {name}, aged {age}."]
    )
    ask = rng.choice(["Extract name, age and city as JSON.", "Give the name, age and city as JSON."])
    answer = json.dumps({"name": name, "age": age, "city": city})
    other_city = rng.choice([c for c in CITIES if c != city])
    distractors = [
        json.dumps({"name": name, "age": age + 1, "city": city}),
        json.dumps({"name": name, "age": age, "city": other_city}),
        json.dumps({"name": city, "age": age, "city": name}),
    ]
    malformed = [
        json.dumps({"name": name, "age": str(age), "city": city}),  # age as a string
        f"{{'name': '{name}', 'age': {age}, 'city': '{city}'}}",  # a Python dict, not JSON
        f"name: {name}, age: {age}, city: {city}",
    ]
    return _single_turn(f"{name}|{age}|{city}", rng, f"{ask}\n{sentence}", answer, f"Here is the JSON: {answer}",
                        distractors, malformed)


# The tool protocol: one line, `CALL calculator(EXPR)`, EXPR made of integers, + - * and brackets.
CALL_RE = re.compile(r"CALL calculator\(([0-9+\-* ()]+)\)")


def format_call(expr: str) -> str:
    return f"CALL calculator({expr})"


def parse_call(text: str) -> str | None:
    """The EXPR of a reply that is exactly one calculator call, else None."""
    match = CALL_RE.fullmatch(text.strip())
    return match.group(1) if match else None


def calculator(expr: str) -> str:
    """Evaluate + - * on integers by walking the syntax tree (never `eval`): the tool's reply."""
    try:
        return str(evaluate(expr, INTEGER_RING, floats=False))
    except ValueError:
        return "error"


def run_tool(reply: str) -> str | None:
    """What the tool turn says after `reply`, or None if `reply` is not a call (an RL loop's step)."""
    expr = parse_call(reply)
    return None if expr is None else calculator(expr)


def gen_tool(rng: random.Random) -> Problem:
    op = rng.choice("+-*")
    a, b = rng.randint(10, 99), rng.randint(2 if op == "*" else 10, 9 if op == "*" else 99)
    if op == "-" and b > a:
        a, b = b, a
    word = {"+": "plus", "-": "minus", "*": "times"}[op]
    user = rng.choice([f"What is {a} {word} {b}?", f"Compute {a}{op}{b}.", f"How much is {a} {word} {b}?"])
    expr = f"{a}{op}{b}"
    call, result = format_call(expr), calculator(expr)
    value, wrong_expr = int(result), f"{a}{'-' if op == '+' else '+'}{b}"  # the wrong operation: never equal here
    ask = [msg("system", TOOL_SYSTEM), msg("user", user)]
    after_call = [*ask, msg("assistant", call), msg("tool", result)]
    call_stage = Stage(ask, call, [format_call(wrong_expr)], [result, f"calculator({expr})", f"CALL calc({expr})"])
    answer_stage = Stage(after_call, result, _near_numbers(value), [f"The answer is {result}.", call])
    return Problem(f"{a}{op}{b}", [*after_call, msg("assistant", result)], [call_stage, answer_stage], f"The answer is {result}.")


def gen_instruct(rng: random.Random) -> Problem:
    word, n = rng.choice(WORDS), rng.randint(2, 4)
    kind = rng.choice(["reverse", "upper", "count", "repeat"])
    if kind == "reverse":
        user = rng.choice([f"Reverse the word: {word}", f"Write {word} backwards."])
        answer = word[::-1]
        distractors = [word, answer[1] + answer[0] + answer[2:], answer[:-1]]
        chatty, malformed = f"The word backwards is {answer}.", [answer.upper()]
    elif kind == "upper":
        user = rng.choice([f"Write in capitals: {word}", f"Make this uppercase: {word}"])
        answer = word.upper()
        distractors, malformed, chatty = [word.capitalize(), answer[:-1]], [word, f"{answer}!"], f"In capitals: {answer}"
    elif kind == "count":
        user = rng.choice([f"How many letters are in {word}?", f"Count the letters in {word}."])
        answer = str(len(word))
        distractors, malformed, chatty = _near_numbers(len(word)), [], f"{word} has {len(word)} letters."
    else:
        user = rng.choice([f"Repeat the word {word} {n} times.", f"Say {word} {n} times."])
        answer = " ".join([word] * n)
        distractors, malformed = [" ".join([word] * (n + 1)), " ".join([word] * (n - 1))], [f"{answer}."]
        chatty = f"Here it is: {answer}"
        kind = f"repeat{n}"
    return _single_turn(f"{kind}:{word}", rng, user, answer, chatty, distractors, malformed)


def gen_multiturn(rng: random.Random) -> Problem:
    kind = rng.choice(["name", "number", "color", "add"])
    if kind == "name":
        name = rng.choice(NAMES)
        question = rng.choice(["What is my name?", "Do you remember my name?"])
        turns = [f"Hi, my name is {name}.", f"Nice to meet you, {name}.", question]
        key, answer, distractors = name, name, [n for n in rng.sample(NAMES, 3) if n != name]
        chatty, malformed = f"Your name is {name}.", [name.lower()]
    elif kind == "number":
        x = rng.randint(1, 99)
        question = rng.choice(["What number did I ask you to remember?", "Which number was it?"])
        turns = [f"Remember the number {x}.", "OK.", question]
        key, answer, distractors, malformed = str(x), str(x), _near_numbers(x), []
        chatty = f"The number was {x}."
    elif kind == "color":
        color, a, b = rng.choice(COLORS), rng.randint(1, 9), rng.randint(1, 9)
        # three turns: a question in between, so the answer is not simply in the last user turn
        turns = [f"My favourite colour is {color}.", "OK.", f"What is {a} plus {b}?", str(a + b)]
        turns.append("What is my favourite colour?")
        key, answer, distractors = f"{color}:{a}+{b}", color, [c for c in rng.sample(COLORS, 3) if c != color]
        chatty, malformed = f"Your favourite colour is {color}.", [str(a + b)]
    else:
        x, y = rng.randint(1, 50), rng.randint(1, 9)
        turns = [f"Remember the number {x}.", "OK.", f"Add {y} to it. What do you get?"]
        key, answer, distractors, malformed = f"{x}+{y}", str(x + y), _near_numbers(x + y, x), []
        chatty = f"I get {x + y}."
    prompt = _maybe_system(rng) + [msg("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(turns)]
    stage = Stage(prompt, answer, [d for d in dict.fromkeys(distractors) if d != answer], [chatty, *malformed])
    return Problem(f"{kind}:{key}", [*prompt, msg("assistant", answer)], [stage], chatty)


# ---------------------------------------------------------------- rewards


_INT_RE = re.compile(r"-?\d+")


def number_reward(expected: str, completion: str) -> float:
    text = completion.strip()
    if text == expected:
        return 1.0
    numbers = _INT_RE.findall(text)
    if numbers == [expected]:
        return 0.5  # right value, extra words
    if _INT_RE.fullmatch(text):
        return 0.1  # right format, wrong value
    return 0.0


def exact_reward(expected: str, completion: str) -> float:
    return 1.0 if completion.strip() == expected else 0.0


def json_reward(expected: str, completion: str) -> float:
    try:
        got = json.loads(completion.strip())
    except json.JSONDecodeError:
        return 0.0
    if not isinstance(got, dict):
        return 0.0
    want = json.loads(expected)
    keys = set(want) | set(got)
    # bool is an int in Python; `true` is not an age. type() keeps "34" != 34 and True != 1.
    agree = sum(1 for k in keys if k in want and k in got and type(got[k]) is type(want[k]) and got[k] == want[k])
    return agree / len(keys)


def tool_reward(expected: str, completion: str) -> float:
    want = parse_call(expected)
    if want is None:  # the final-answer stage
        return number_reward(expected, completion)
    got = parse_call(completion)
    if got is None:
        return 0.0
    return 1.0 if calculator(got) == calculator(want) else 0.25


def _is_number(text: str) -> bool:
    return bool(_INT_RE.fullmatch(text))


def mixed_reward(expected: str, completion: str) -> float:
    """Number rules when the answer is a number, exact match otherwise (instruct, multiturn)."""
    return number_reward(expected, completion) if _is_number(expected) else exact_reward(expected, completion)


# ---------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    """A named problem generator and the reward that grades replies to it."""

    name: str
    generate: Callable[[random.Random], Problem]
    reward: Callable[[str, str], float]

    def problems(self, n: int, split: str, seed: int) -> list[Problem]:
        """n problems of `split`, drawn with a seed-determined rng; other-split draws are dropped."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
        rng = random.Random(f"{self.name}/{split}/{seed}")
        out: list[Problem] = []
        for _ in range(100 * n + 1000):
            if len(out) == n:
                return out
            problem = self.generate(rng)
            if split_of(self.name, problem.key) == split:
                out.append(problem)
        raise DataError(f"task {self.name}: could not draw {n} {split} problems")

    def _pairs(self, n: int, split: str, seed: int):
        """(problem, graded stage, rng) triples; the rng makes per-record choices reproducible."""
        rng = random.Random(f"{self.name}/{split}/{seed}/stages")
        for problem in self.problems(n, split, seed):
            yield problem, rng.choice(problem.stages), rng

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
            {"task": self.name, "prompt": stage.prompt, "chosen": stage.answer,
             "rejected": rng.choice(stage.distractors + stage.malformed)}
            for _, stage, rng in self._pairs(n, split, seed)
        ]

    def rl_prompts(self, n: int, split: str = "train", seed: int = 0) -> list[dict]:
        return [{"task": self.name, "prompt": s.prompt, "answer": s.answer} for _, s, _ in self._pairs(n, split, seed)]

    def choices(self, n: int, split: str = "test", seed: int = 0) -> list[dict]:
        """Multiple choice: the right reply among up to three well-formatted wrong ones."""
        records = []
        for problem, _, rng in self._pairs(n, split, seed):
            stage = problem.stages[-1]  # the final answer (the tool task's call is not a choice)
            options = [stage.answer, *stage.distractors[:3]]
            rng.shuffle(options)
            answer_index = options.index(stage.answer)
            records.append({"task": self.name, "prompt": stage.prompt, "choices": options, "answer_index": answer_index})
        return records

    def verify(self, record: dict, completion: str) -> float:
        return self.reward(record["answer"], completion)


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("arithmetic", gen_arithmetic, number_reward),
        Task("spam", gen_spam, exact_reward),
        Task("extract", gen_extract, json_reward),
        Task("tool", gen_tool, tool_reward),
        Task("instruct", gen_instruct, mixed_reward),
        Task("multiturn", gen_multiturn, mixed_reward),
    )
}


TaskNames = Sequence[str] | None  # None: every task


def get_tasks(names: TaskNames = None) -> list[Task]:
    """Tasks by name (all of them for None), with a clear error for a typo."""
    names = list(TASKS) if names is None else [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        raise ConfigError(f"unknown task(s) {', '.join(unknown) or '(none given)'}; tasks are {', '.join(TASKS)}")
    return [TASKS[n] for n in names]


def _mix(kind: str, tasks, n_per_task: int, split: str, seed: int, **options) -> list[dict]:
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
