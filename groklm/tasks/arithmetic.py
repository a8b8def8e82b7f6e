"""arithmetic: a one-step word problem, "Tom has 3 apples and buys 4 more. How many ...?" -> "7"."""

from __future__ import annotations

import random

from groklm.tasks.base import NAMES, Forms, Problem, Task, near_numbers, number_reward, single_turn

ITEMS = "apples pencils books coins marbles cookies stickers cards shells eggs".split()
STORIES = {
    "+": Forms(
        seen=("{name} has {a} {item} and buys {b} more.", "{name} has {a} {item} and finds {b} more.",
              "{name} had {a} {item}. A friend gave {name} {b} more.", "{name} starts with {a} {item} and wins {b} more."),
        held_out=("{name} got {a} {item} in the morning and {b} in the afternoon.",),
    ),
    "-": Forms(
        seen=("{name} has {a} {item} and gives away {b}.", "{name} has {a} {item} and loses {b}.",
              "{name} had {a} {item} and sold {b} of them.", "{name} has {a} {item}, then hands {b} to a friend."),
        held_out=("{name} started with {a} {item}. Later, {b} of them went missing.",),
    ),
    "*": Forms(
        seen=("{name} has {a} boxes with {b} {item} in each.", "{name} buys {a} bags of {b} {item}.",
              "{name} fills {a} jars with {b} {item} each."),
        held_out=("{name} lines up {a} rows of {b} {item}.",),
    ),
}
QUESTIONS = Forms(
    seen=("How many {item} does {name} have now?", "How many {item} does {name} have?",
          "How many {item} does {name} end up with?"),
    held_out=("What is the number of {item} that {name} has?",),
)


def generate(rng: random.Random, held_out: bool) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    op = rng.choice("+-*")
    if op == "+":
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        value, wrong_op = a + b, abs(a - b)
    elif op == "-":
        a = rng.randint(2, 20)
        b = rng.randint(1, a - 1)
        value, wrong_op = a - b, a + b
    else:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        value, wrong_op = a * b, a + b
    story = STORIES[op].pick(rng, held_out, name=name, item=item, a=a, b=b)
    question = QUESTIONS.pick(rng, held_out, name=name, item=item)
    answer = str(value)
    return single_turn(
        f"{op}:{a}:{b}", rng, f"{story} {question}", answer, f"{name} has {value} {item}.",
        near_numbers(value, wrong_op), [f"The answer is {value}."],
    )


TASK = Task("arithmetic", generate, number_reward, (*STORIES.values(), QUESTIONS))
