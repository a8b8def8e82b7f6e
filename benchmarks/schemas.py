"""Structured output on a tiny model: how often is the output schema-valid, with and without a grammar?

A suite of Pydantic models (nested objects, lists, enums, optionals, bounded numbers, string
patterns and formats, unions, constants). For each, a tiny local model answers several times
(temperature 1, one seed per sample) three ways:

    unconstrained   the schema in the system prompt, the reply parsed and validated (extract,
                    mode="prompt", no retries): what a model does on its own
    grammar         decoding constrained by the schema's grammar, no retries: the shape is
                    guaranteed; bounds the grammar cannot express (float ranges, wide integer
                    ranges) are not, and validation rejects those
    grammar+reask   the same with up to 2 re-asks carrying the validation errors

The model is a random-init GPT of the speedrun's shape (context 1024) with a BPE vocabulary
trained here, or any run given with --run (e.g. runs/speedrun/sft). A random model is the
hard case for a grammar (it "wants" nothing in particular) and the trivial one for the
unconstrained baseline (it never writes JSON); the speedrun's SFT model, which learned one
extraction task, shows a real unconstrained rate on that task (extract_task_*: its held-out
prompts, greedy, valid and exactly right, without and with the grammar).

Prints one JSON line on stdout (progress on stderr):
    python benchmarks/schemas.py [--samples 5] [--run RUN] [--threads N]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
import uuid
from enum import Enum
from pathlib import Path
from typing import Annotated, Literal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from groklm.apps.backends import LocalBackend  # noqa: E402
from groklm.apps.structured import ExtractionError, extract  # noqa: E402
from groklm.errors import ConfigError  # noqa: E402

os.environ.setdefault("GROKLM_TRACES", "off")  # a benchmark's thousands of calls are not worth keeping


class Color(str, Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Person(BaseModel):
    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=120)
    city: str = Field(max_length=20)


class Paint(BaseModel):
    color: Color
    glossy: bool


class Sentiment(BaseModel):
    label: Literal["positive", "negative", "neutral"]


class Flags(BaseModel):
    enabled: bool
    retries: int = Field(ge=0, le=5)


class Profile(BaseModel):
    handle: str = Field(max_length=12)
    bio: str | None = Field(default=None, max_length=30)


class Tags(BaseModel):
    tags: list[Annotated[str, Field(max_length=10)]] = Field(max_length=4)


class Scores(BaseModel):
    scores: list[int] = Field(max_length=5)


class Address(BaseModel):
    street: str = Field(max_length=24)
    zip: str = Field(pattern=r"^[0-9]{5}$")


class Resident(BaseModel):
    name: str = Field(max_length=16)
    address: Address


class Item(BaseModel):
    sku: str = Field(pattern=r"^[A-Z]{3}-[0-9]{3}$")
    qty: int = Field(ge=1, le=9)


class Order(BaseModel):
    items: list[Item] = Field(min_length=1, max_length=3)


class Zip(BaseModel):
    zip: str = Field(pattern=r"^[0-9]{5}$")


class Event(BaseModel):
    title: str = Field(max_length=20)
    day: datetime.date


class Contact(BaseModel):
    email: str = Field(pattern=r"^[a-z]{1,8}@[a-z]{1,8}\.(com|org)$")


class Probability(BaseModel):
    p: float = Field(ge=0.0, le=1.0)  # a float range: the grammar cannot hold it


class Population(BaseModel):
    count: int = Field(ge=0, le=100_000)  # too wide to enumerate: validation's job


class Answer(BaseModel):
    value: Annotated[str, Field(max_length=12)] | int


class Versioned(BaseModel):
    version: Literal[1]
    name: str = Field(max_length=10)


class Company(BaseModel):
    name: str = Field(max_length=16)
    ceo: Resident
    founded: int = Field(ge=1800, le=2025)


class Rating(BaseModel):
    stars: Literal[1, 2, 3, 4, 5]


class Choice(BaseModel):
    picks: list[Color] = Field(min_length=1, max_length=3)


class Meeting(BaseModel):
    room: str = Field(max_length=8)
    host: Address | None = None


class Batch(BaseModel):
    size: int = Field(ge=0, le=100, multiple_of=10)


class Window(BaseModel):
    hour: int = Field(gt=8, lt=18)


class Word(BaseModel):
    word: str = Field(min_length=3, max_length=6)


class Ticket(BaseModel):
    id: uuid.UUID


class Point(BaseModel):
    x: float
    y: float


class Discount(BaseModel):
    rate: float = Field(ge=0.05, le=0.5)  # fractional bounds: beyond the grammar, validation's job


SUITE = [Person, Paint, Sentiment, Flags, Profile, Tags, Scores, Resident, Order, Zip, Event, Contact, Probability,
         Population, Answer, Versioned, Company, Rating, Choice, Meeting, Batch, Window, Word, Ticket, Point]
UNCOVERED = [Discount]  # reported apart: what the grammar does not enforce, and how re-asking fares


def build_model_run(directory: Path, block_size: int = 1024, vocab_size: int = 4096) -> Path:
    """A random-init GPT of the speedrun's shape with a BPE vocabulary learned from the
    synthetic chat tasks and some of the standard library's source (as the speedrun's is)."""
    from groklm.data.sources import pystdlib_files
    from groklm.model import GPT, GPTConfig
    from groklm.model.weights import save_weights
    from groklm.rundir import write_json
    from groklm.tasks import make_sft
    from groklm.tokenizer import Tokenizer

    chats = "\n".join(m["content"] for r in make_sft(n_per_task=200) for m in r["messages"])
    code = "\n".join(path.read_text(errors="replace") for path in sorted(pystdlib_files())[:60])
    tokenizer = Tokenizer.train(chats + "\n" + code, vocab_size)
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=block_size, n_layer=4, n_head=4, n_embd=128)
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(GPT(config), directory / "model.safetensors")
    write_json(directory / "config.json", {"model": config.to_dict(), "stage": "pretrain", "arch": "gpt"})
    tokenizer.save(directory / "tokenizer")
    return directory


def sample(backend, model, seed: int, mode: str, retries: int, max_tokens: int) -> bool:
    """One answer: did it validate? (A prompt too long for the model's context counts as no.)"""
    prompt = f"Give an example {model.__name__} as JSON."
    try:
        extract(backend, model, prompt, max_retries=retries, mode=mode, temperature=1.0, seed=seed, max_tokens=max_tokens)
        return True
    except (ExtractionError, ConfigError):
        return False


class Extracted(BaseModel):
    """The synthetic extract task's answer (what the speedrun's SFT model learned to write)."""

    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=120)
    city: str = Field(max_length=20)


def extract_task(backend, n: int) -> dict:
    """The synthetic extract task's held-out prompts, in the format the SFT model learned:
    valid and exactly right, without and with the grammar."""
    from groklm.tasks import TASKS

    counts = {"unconstrained_valid": 0, "unconstrained_correct": 0, "grammar_valid": 0, "grammar_correct": 0}
    records = TASKS["extract"].rl_prompts(n, "test", 0)
    for record in records:
        want = Extracted.model_validate_json(record["answer"])
        for way, options in (("unconstrained", {}), ("grammar", {"json_schema": Extracted.model_json_schema()})):
            try:
                got = Extracted.model_validate_json(backend.chat(record["prompt"], max_tokens=60, **options).text)
            except ValueError:  # not JSON, or not valid
                continue
            counts[f"{way}_valid"] += 1
            counts[f"{way}_correct"] += got == want
    return {f"extract_task_{k}_pct": round(100 * v / len(records), 1) for k, v in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=5, help="answers per schema and way (default 5)")
    parser.add_argument("--run", default=None, help="a run directory to use instead of the random tiny model")
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    ways = {"unconstrained": ("prompt", 0), "grammar": ("grammar", 0), "grammar_reask": ("grammar", 2)}
    results = {"benchmark": "schemas", "model": args.run or "random tiny GPT (speedrun shape, context 1024)",
               "schemas": len(SUITE), "samples_per_schema": args.samples}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        backend = LocalBackend(Path(args.run) if args.run else build_model_run(Path(tmp) / "run"))
        for suite, prefix in ((SUITE, ""), (UNCOVERED, "uncovered_")):
            valid = {way: 0 for way in ways}
            failures: dict[str, list[str]] = {way: [] for way in ways if way != "unconstrained"}
            for model in suite:
                for way, (mode, retries) in ways.items():
                    ok = sum(sample(backend, model, seed, mode, retries, args.max_tokens) for seed in range(args.samples))
                    valid[way] += ok
                    if ok < args.samples and way in failures:
                        failures[way].append(f"{model.__name__} {ok}/{args.samples}")
                print(f"{model.__name__}: done ({time.perf_counter() - start:.0f}s)", file=sys.stderr)
            for way in ways:
                results[f"{prefix}{way}_valid_pct"] = round(100 * valid[way] / (len(suite) * args.samples), 1)
            results[f"{prefix}failures"] = failures
        results.update(extract_task(backend, args.samples * 8))
    results["uncovered_schemas"] = [m.__name__ for m in UNCOVERED]
    results["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
