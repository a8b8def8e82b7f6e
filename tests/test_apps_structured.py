"""extract() and classify() on real models: constrained decoding, re-asks, fallbacks, confidences."""

from __future__ import annotations

import json
import math
from enum import Enum
from typing import Literal

import httpx
import pytest
from pydantic import BaseModel, Field, field_validator, model_validator

from groklm.apps.backends import LocalBackend, OpenAIBackend
from groklm.apps.structured import ExtractionError, classify, extract, first_json
from groklm.errors import ConfigError

from helpers.apps import random_run, spam_questions, spam_run, spam_server

pytestmark = pytest.mark.usefixtures("traces")  # every apps test records its spans in its own file


class Address(BaseModel):
    city: Literal["Lyon", "Oslo", "Rome"]
    zip: str = Field(pattern=r"^[0-9]{5}$")


class Person(BaseModel):
    name: str = Field(min_length=1, max_length=10)
    age: int = Field(ge=0, le=120)
    address: Address
    tags: list[Literal["a", "b"]] = Field(max_length=3)
    nickname: str | None = Field(default=None, max_length=8)


@pytest.fixture(scope="module")
def backend():
    return LocalBackend(random_run())


def test_constrained_extraction_is_valid_on_the_first_attempt_even_for_a_random_model(backend):
    for seed in range(3):
        result = extract(backend, Person, "Tell me about Ann.", temperature=1.0, seed=seed)
        person, [attempt] = result.value, result.attempts
        assert isinstance(person, Person) and 0 <= person.age <= 120 and len(person.address.zip) == 5
        assert attempt.mode == "grammar" and attempt.error is None and Person.model_validate_json(attempt.text) == person
        assert result.usage == attempt.usage and attempt.usage.input_tokens == backend.count_tokens(
            [{"role": "user", "content": "Tell me about Ann."}])


def test_validator_failures_are_re_asked_with_the_errors(backend, traces):
    seen = []

    class Checked(BaseModel):
        word: Literal["yes", "no", "maybe"]

        @field_validator("word")
        @classmethod
        def refuse_the_first(cls, value):
            seen.append(value)
            if len(seen) == 1:
                raise ValueError("not this one, think again")
            return value

    result = extract(backend, Checked, [{"role": "user", "content": "Answer."}], max_retries=2)
    first, second = result.attempts
    assert "not this one, think again" in first.error and second.error is None
    assert result.value.word == seen[1] and result.usage == first.usage + second.usage
    # The trace: extract -> attempt 1, attempt 2 -> one chat each; the re-ask carries the errors.
    spans = traces.trace(traces.roots(1)[0][0].trace_id)
    by_id = {s.span_id: s for s in spans}
    chats = [s for s in spans if s.name.startswith("chat ")]
    assert [by_id[c.parent_id].name for c in chats] == ["attempt 1", "attempt 2"]
    assert {by_id[by_id[c.parent_id].parent_id].name for c in chats} == {"extract Checked"}
    asked = json.loads(chats[1].attributes["gen_ai.input.messages"])
    assert asked[1] == {"role": "assistant", "content": first.text} and "think again" in asked[2]["content"]


def test_exhausted_retries_raise_with_every_attempt(backend):
    class Impossible(BaseModel):
        n: int = Field(ge=0, le=9)

        @model_validator(mode="after")
        def never(self):
            raise ValueError("cross-field check failed")

    with pytest.raises(ExtractionError, match="after 3 attempt") as error:
        extract(backend, Impossible, "A digit.", max_retries=2)
    assert len(error.value.attempts) == 3 and all("cross-field check failed" in a.error for a in error.value.attempts)
    assert error.value.usage.output_tokens == sum(a.usage.output_tokens for a in error.value.attempts) > 0
    with pytest.raises(ExtractionError) as error:
        extract(backend, Impossible, "A digit.", max_retries=0)
    assert len(error.value.attempts) == 1
    with pytest.raises(ConfigError, match="max_retries"):
        extract(backend, Impossible, "A digit.", max_retries=-1)
    with pytest.raises(ConfigError, match="unknown mode"):
        extract(backend, Impossible, "A digit.", mode="magic")


def test_numeric_bounds_the_grammar_cannot_hold_are_caught_by_validation(backend):
    class Wide(BaseModel):
        score: float = Field(ge=0.5, le=0.75)  # a float range: not enforced while decoding

    outcomes = []
    for seed in range(4):
        try:
            result = extract(backend, Wide, "Score?", max_retries=1, temperature=1.0, seed=seed, max_tokens=24)
            outcomes.append(0.5 <= result.value.score <= 0.75)
        except ExtractionError as error:  # every attempt rejected, each with the reason
            outcomes.append(all(a.error for a in error.attempts))
    assert all(outcomes)  # never an out-of-range value accepted


def test_http_modes_against_groklm_serve():
    remote = OpenAIBackend(spam_server().url + "/v1")

    class Place(BaseModel):  # keys in alphabetical order: the server compiles schemas with sorted keys
        city: Literal["Lyon", "Oslo"]
        name: str = Field(max_length=8)

    # max_tokens within the tiny model's 512-token context: the server refuses more, as OpenAI's does
    result = extract(remote, Place, "Where?", max_tokens=80)
    assert result.attempts[0].mode == "json_schema" and isinstance(result.value, Place)
    called = extract(remote, Place, "Where?", mode="tools", max_tokens=80)
    assert called.attempts[-1].mode == "tools" and isinstance(called.value, Place)


def test_a_server_without_response_format_falls_back_to_prompting():
    requests = []

    def server(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        requests.append(body)
        if "response_format" in body:
            return httpx.Response(400, json={"error": {"message": "response_format is not supported"}})
        reply = 'Sure! Here it is:\n```json\n{"city": "Oslo", "name": "Ann"}\n```'
        return httpx.Response(200, json={"model": "m", "choices": [{"message": {"content": reply}, "finish_reason": "stop"}],
                                         "usage": {"prompt_tokens": 20, "completion_tokens": 9}})

    class Place(BaseModel):
        city: str
        name: str

    remote = OpenAIBackend("http://test/v1", model="m", transport=httpx.MockTransport(server))
    result = extract(remote, Place, "Where?")
    assert result.value == Place(city="Oslo", name="Ann")
    assert [a.mode for a in result.attempts] == ["rejected", "prompt"] and "not supported" in result.attempts[0].error
    assert "JSON schema" in requests[1]["messages"][0]["content"] and '"city"' in requests[1]["messages"][0]["content"]
    assert result.usage.input_tokens == 20


def test_first_json_finds_the_object_in_chatty_replies():
    assert first_json('Here: {"a": [1, {"b": 2}]} done {"c": 3}') == '{"a": [1, {"b": 2}]}'
    assert first_json("no json {here") == "no json {here"
    assert first_json("[1, 2] and more") == "[1, 2]"


class Verdict(str, Enum):
    spam = "spam"
    ham = "not spam"


def test_classify_the_spam_example_with_a_trained_model():
    backend = LocalBackend(spam_run())
    questions = spam_questions(20)
    correct = 0
    for ask, email, answer in questions:
        result = classify(backend, email, ["spam", "not spam"], instructions=ask)
        assert result.confidence == max(result.scores.values()) and sum(result.scores.values()) == pytest.approx(1.0)
        # The confidence is the label's probability as the whole reply, renormalised over the labels.
        logps = backend.score([{"role": "user", "content": f"{ask}\n{email}"}], ["spam", "not spam"])
        assert result.scores["spam"] == pytest.approx(1 / (1 + math.exp(logps[1] - logps[0])))
        correct += result.label == answer
    assert correct >= 0.9 * len(questions)
    ask, email, answer = questions[0]
    as_enum = classify(backend, email, Verdict, instructions=ask)
    assert isinstance(as_enum.label, Verdict) and as_enum.label.value == answer
    assert classify(backend, email, Literal["spam", "not spam"], instructions=ask).label == answer


def test_classify_over_http_takes_its_confidence_from_logprobs():
    remote = OpenAIBackend(spam_server().url + "/v1")
    ask, email, answer = next(q for q in spam_questions(10) if q[2] == "spam")
    result = classify(remote, email, ["spam", "not spam"], instructions=ask)
    local = classify(LocalBackend(spam_run()), email, ["spam", "not spam"], instructions=ask)
    assert result.label == answer == local.label and result.scores is None
    assert 0.5 < result.confidence <= 1.0
    with pytest.raises(ConfigError, match="labels"):
        classify(remote, email, [])
    with pytest.raises(ConfigError, match="distinct"):
        classify(remote, email, ["a", "a"])


def test_every_schema_of_the_benchmark_suite_is_valid_under_the_grammar(backend):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from schemas import SUITE

    for model in SUITE:
        for seed in range(2):
            result = extract(backend, model, f"An example {model.__name__}.", max_retries=0, temperature=1.0, seed=seed,
                             max_tokens=200)
            assert isinstance(result.value, model) and result.attempts[0].error is None, model.__name__
