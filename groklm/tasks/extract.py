"""extract: "Maria is 34 and lives in Lyon." -> {"name": "Maria", "age": 34, "city": "Lyon"}."""

from __future__ import annotations

import json
import random

from groklm.tasks.base import NAMES, Forms, Problem, Task, single_turn

CITIES = (
    "Lyon Paris Rome Oslo Lima Cairo Tokyo Berlin Madrid Dublin Vienna Prague Lisbon Delhi Seoul "
    "Boston Quito Dakar Riga Porto Kyiv Milan Nice Bern"
).split()

SENTENCES = Forms(
    seen=("{name} is {age} and lives in {city}.", "{name}, {age}, lives in {city}.",
          "Meet {name} from {city}, who is {age} years old.", "{city} is home to {name}, aged {age}.",
          "{name} ({age}) is based in {city}.", "Aged {age}, {name} has made {city} home."),
    held_out=("Living in {city}, {name} turned {age} this year.", "This is {name}: {age} years old, from {city}."),
)
ASK = Forms(
    seen=("Extract name, age and city as JSON.", "Give the name, age and city as JSON.",
          "Return the person's name, age and city in JSON."),
    held_out=("As JSON, what are the name, age and city?",),
)


def generate(rng: random.Random, held_out: bool) -> Problem:
    name, age, city = rng.choice(NAMES), rng.randint(18, 80), rng.choice(CITIES)
    sentence = SENTENCES.pick(rng, held_out, name=name, age=age, city=city)
    ask = ASK.pick(rng, held_out)
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
    return single_turn(f"{name}|{age}|{city}", rng, f"{ask}\n{sentence}", answer, f"Here is the JSON: {answer}",
                       distractors, malformed)


def json_reward(expected: str, completion: str) -> float:
    """Invalid JSON or not an object: 0. Else the share of keys, over both objects, whose values
    agree: exact 1.0, one wrong field 2/3, an extra key 3/4."""
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


TASK = Task("extract", generate, json_reward, (SENTENCES, ASK))
