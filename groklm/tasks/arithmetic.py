"""arithmetic: a one-step word problem, "Tom has 3 apples and buys 4 more. How many ...?" -> "7"."""

from __future__ import annotations

import random

from groklm.tasks.base import NAMES, Problem, Task, near_numbers, number_reward, single_turn

ITEMS = "apples pencils books coins marbles cookies stickers cards shells eggs".split()


def generate(rng: random.Random) -> Problem:
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
    return single_turn(
        f"{op}:{a}:{b}", rng, f"{story} {question}", answer, f"{name} has {value} {item}.",
        near_numbers(value, wrong_op), [f"The answer is {value}."],
    )


TASK = Task("arithmetic", generate, number_reward)
