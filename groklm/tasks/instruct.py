"""instruct: reverse a word, write it in capitals, count its letters, repeat it N times."""

from __future__ import annotations

import random

from groklm.tasks.base import Forms, Problem, Task, mixed_reward, near_numbers, single_turn

WORDS = (
    "cat dog sun tree book fish milk rain star moon bird lamp door cake ship road fire snow hand "
    "apple green house river music table water chair plant cloud stone light happy paper orange "
    "garden window yellow purple silver rabbit pocket candle bridge summer winter forest"
).split()

INSTRUCTIONS = {
    "reverse": Forms(seen=("Reverse the word: {word}", "Write {word} backwards.", "Spell {word} backwards."),
                     held_out=("What is {word} written in reverse?",)),
    "upper": Forms(seen=("Write in capitals: {word}", "Make this uppercase: {word}", "Turn {word} into capital letters."),
                   held_out=("Give {word} in upper case.",)),
    "count": Forms(seen=("How many letters are in {word}?", "Count the letters in {word}.",
                         "How long is the word {word}, in letters?"),
                   held_out=("Number of letters in {word}?",)),
    "repeat": Forms(seen=("Repeat the word {word} {n} times.", "Say {word} {n} times.", "Write {word} {n} times."),
                    held_out=("Print {word} {n} times, separated by spaces.",)),
}


def generate(rng: random.Random, held_out: bool) -> Problem:
    word, n = rng.choice(WORDS), rng.randint(2, 4)
    kind = rng.choice(list(INSTRUCTIONS))
    user = INSTRUCTIONS[kind].pick(rng, held_out, word=word, n=n)
    if kind == "reverse":
        answer = word[::-1]
        distractors = [word, answer[1] + answer[0] + answer[2:], answer[:-1]]
        chatty, malformed = f"The word backwards is {answer}.", [answer.upper()]
    elif kind == "upper":
        answer = word.upper()
        distractors, malformed, chatty = [word.capitalize(), answer[:-1]], [word, f"{answer}!"], f"In capitals: {answer}"
    elif kind == "count":
        answer = str(len(word))
        distractors, malformed, chatty = near_numbers(len(word)), [], f"{word} has {len(word)} letters."
    else:
        answer = " ".join([word] * n)
        distractors, malformed = [" ".join([word] * (n + 1)), " ".join([word] * (n - 1))], [f"{answer}."]
        chatty = f"Here it is: {answer}"
        kind = f"repeat{n}"
    return single_turn(f"{kind}:{word}", rng, user, answer, chatty, distractors, malformed)


TASK = Task("instruct", generate, mixed_reward, tuple(INSTRUCTIONS.values()))
