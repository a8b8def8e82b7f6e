"""instruct: reverse a word, write it in capitals, count its letters, repeat it N times."""

from __future__ import annotations

import random

from groklm.tasks.base import Problem, Task, mixed_reward, near_numbers, single_turn

WORDS = (
    "cat dog sun tree book fish milk rain star moon bird lamp door cake ship road fire snow hand "
    "apple green house river music table water chair plant cloud stone light happy paper orange "
    "garden window yellow purple silver rabbit pocket candle bridge summer winter forest"
).split()


def generate(rng: random.Random) -> Problem:
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
        distractors, malformed, chatty = near_numbers(len(word)), [], f"{word} has {len(word)} letters."
    else:
        user = rng.choice([f"Repeat the word {word} {n} times.", f"Say {word} {n} times."])
        answer = " ".join([word] * n)
        distractors, malformed = [" ".join([word] * (n + 1)), " ".join([word] * (n - 1))], [f"{answer}."]
        chatty = f"Here it is: {answer}"
        kind = f"repeat{n}"
    return single_turn(f"{kind}:{word}", rng, user, answer, chatty, distractors, malformed)


TASK = Task("instruct", generate, mixed_reward)
