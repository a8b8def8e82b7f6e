"""multiturn: the last answer depends on an earlier turn (a name, a number, a colour, a sum)."""

from __future__ import annotations

import random

from groklm.tasks.base import NAMES, Forms, GradedReply, Problem, Task, maybe_system, mixed_reward, msg, near_numbers

COLORS = "red blue green yellow purple orange black white pink brown".split()
INTRODUCTIONS = Forms(seen=("Hi, my name is {name}.", "Hello! I'm {name}.", "Hey there, I am {name}."),
                      held_out=("{name} here, glad to chat.",))
NAME_QUESTIONS = Forms(seen=("What is my name?", "Do you remember my name?", "Who am I?"),
                       held_out=("Can you tell me my name?",))
REMEMBER = Forms(seen=("Remember the number {x}.", "Please keep {x} in mind.", "Hold on to this number: {x}."),
                 held_out=("Note this number for later: {x}.",))
NUMBER_QUESTIONS = Forms(seen=("What number did I ask you to remember?", "Which number was it?",
                               "What was the number?"),
                         held_out=("Which number did I give you?",))
FAVOURITES = Forms(seen=("My favourite colour is {color}.", "I really like the colour {color}.",
                         "The colour I like best is {color}."),
                   held_out=("If I had to pick one colour, it would be {color}.",))
COLOR_QUESTIONS = Forms(seen=("What is my favourite colour?", "Which colour do I like?", "What colour did I say I like?"),
                        held_out=("Tell me my favourite colour.",))
ADD_QUESTIONS = Forms(seen=("Add {y} to it. What do you get?", "Now add {y}. What is the result?"),
                      held_out=("What is that number plus {y}?",))


def generate(rng: random.Random, held_out: bool) -> Problem:
    kind = rng.choice(["name", "number", "color", "add"])
    if kind == "name":
        name = rng.choice(NAMES)
        intro, question = INTRODUCTIONS.pick(rng, held_out, name=name), NAME_QUESTIONS.pick(rng, held_out)
        turns = [intro, f"Nice to meet you, {name}.", question]
        key, answer, distractors = name, name, [n for n in rng.sample(NAMES, 3) if n != name]
        chatty, malformed = f"Your name is {name}.", [name.lower()]
    elif kind == "number":
        x = rng.randint(1, 99)
        turns = [REMEMBER.pick(rng, held_out, x=x), "OK.", NUMBER_QUESTIONS.pick(rng, held_out)]
        key, answer, distractors, malformed = str(x), str(x), near_numbers(x), []
        chatty = f"The number was {x}."
    elif kind == "color":
        color, a, b = rng.choice(COLORS), rng.randint(1, 9), rng.randint(1, 9)
        # three turns: a question in between, so the answer is not simply in the last user turn
        turns = [FAVOURITES.pick(rng, held_out, color=color), "OK.", f"What is {a} plus {b}?", str(a + b),
                 COLOR_QUESTIONS.pick(rng, held_out)]
        key, answer, distractors = f"{color}:{a}+{b}", color, [c for c in rng.sample(COLORS, 3) if c != color]
        chatty, malformed = f"Your favourite colour is {color}.", [str(a + b)]
    else:
        x, y = rng.randint(1, 50), rng.randint(1, 9)
        turns = [REMEMBER.pick(rng, held_out, x=x), "OK.", ADD_QUESTIONS.pick(rng, held_out, y=y)]
        key, answer, distractors, malformed = f"{x}+{y}", str(x + y), near_numbers(x + y, x), []
        chatty = f"I get {x + y}."
    prompt = maybe_system(rng) + [msg("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(turns)]
    reply = GradedReply(prompt, answer, [d for d in dict.fromkeys(distractors) if d != answer], [chatty, *malformed])
    return Problem(f"{kind}:{key}", [*prompt, msg("assistant", answer)], [reply], chatty)


TASK = Task("multiturn", generate, mixed_reward, (INTRODUCTIONS, NAME_QUESTIONS, REMEMBER, NUMBER_QUESTIONS, FAVOURITES,
                                                   COLOR_QUESTIONS, ADD_QUESTIONS))
