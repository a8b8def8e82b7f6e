"""multiturn: the last answer depends on an earlier turn (a name, a number, a colour, a sum)."""

from __future__ import annotations

import random

from groklm.tasks.base import NAMES, GradedReply, Problem, Task, maybe_system, mixed_reward, msg, near_numbers

COLORS = "red blue green yellow purple orange black white pink brown".split()


def generate(rng: random.Random) -> Problem:
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
        key, answer, distractors, malformed = str(x), str(x), near_numbers(x), []
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
        key, answer, distractors, malformed = f"{x}+{y}", str(x + y), near_numbers(x + y, x), []
        chatty = f"I get {x + y}."
    prompt = maybe_system(rng) + [msg("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(turns)]
    reply = GradedReply(prompt, answer, [d for d in dict.fromkeys(distractors) if d != answer], [chatty, *malformed])
    return Problem(f"{kind}:{key}", [*prompt, msg("assistant", answer)], [reply], chatty)


TASK = Task("multiturn", generate, mixed_reward)
