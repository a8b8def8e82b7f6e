"""Numeric bounds as regular expressions: exactly the numbers in range, as JSON writes them."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groklm.apps.backends import LocalBackend
from groklm.infer.schema_regex import (
    ascii_classes,
    float_range,
    integer_range,
    number_pattern,
    schema_regex,
)

from helpers.apps import random_run

pytestmark = pytest.mark.usefixtures("traces")  # every apps test records its spans in its own file

bounds = st.one_of(st.none(), st.integers(-5000, 5000))


@settings(max_examples=300, deadline=None)
@given(low=bounds, high=bounds, value=st.integers(-20000, 20000))
def test_integer_ranges_match_exactly_the_integers_in_range(low, high, value):
    if low is None and high is None:
        return
    if low is not None and high is not None and low > high:
        low, high = high, low
    pattern = re.compile(integer_range(low, high))
    inside = (low is None or value >= low) and (high is None or value <= high)
    assert bool(pattern.fullmatch(str(value))) == inside
    assert not pattern.fullmatch("0" + str(abs(value))) and not pattern.fullmatch("-0")  # JSON has no leading zeros


@settings(max_examples=300, deadline=None)
@given(low=st.integers(-50, 50), span=st.integers(0, 60), whole=st.integers(-120, 120),
       fraction=st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,3}", fullmatch=True)))
def test_float_ranges_match_exactly_the_decimals_in_range(low, span, whole, fraction):
    high = low + span
    text = f"{whole}{fraction}"
    pattern = re.compile(float_range(low, high))
    if text.startswith("-0") and float(text) == 0:
        return  # "-0.0" is 0, and never written by the grammar: either answer is fine
    assert bool(pattern.fullmatch(text)) == (low <= float(text) <= high), (low, high, text)


def test_what_is_covered_and_what_is_left_to_validation():
    assert number_pattern({"type": "integer"}) is None
    assert number_pattern({"type": "integer", "exclusiveMinimum": 0.5, "exclusiveMaximum": 4}) == integer_range(1, 3)
    assert number_pattern({"type": "integer", "minimum": 0, "maximum": 30, "multipleOf": 10}) == "0|10|20|30"
    assert number_pattern({"type": "number", "minimum": 0, "maximum": 1}) == float_range(0, 1)
    assert number_pattern({"type": "number", "minimum": 0.5, "maximum": 1}) is None  # fractional bound
    assert number_pattern({"type": "number", "exclusiveMinimum": 0, "maximum": 1}) is None


def test_a_random_model_keeps_to_the_bounds_under_the_grammar():
    schema = {"type": "object", "properties": {
        "age": {"type": "integer", "minimum": 13, "maximum": 47},
        "p": {"type": "number", "minimum": 0, "maximum": 1},
        "year": {"type": "integer", "minimum": 1900},
        "ages": {"type": "array", "items": {"type": "integer", "minimum": -3, "maximum": 3}, "maxItems": 4}},
        "required": ["age", "p", "year", "ages"]}
    assert re.fullmatch(schema_regex(schema), '{"age": 13, "p": 0.25, "year": 2024, "ages": [-3, 0, 3]}')
    backend = LocalBackend(random_run())
    for seed in range(4):
        reply = backend.chat([{"role": "user", "content": "Go."}], json_schema=schema, temperature=1.0, seed=seed, max_tokens=120)
        value = json.loads(reply.text)
        assert 13 <= value["age"] <= 47 and 0 <= value["p"] <= 1 and value["year"] >= 1900
        assert all(-3 <= a <= 3 for a in value["ages"]) and len(value["ages"]) <= 4


def test_digit_classes_mean_ascii_digits_as_in_json_schema():
    assert ascii_classes(r"\d{4}-\w+ [\d.] \\d \[") == r"[0-9]{4}-[A-Za-z0-9_]+ [0-9.] \\d \["
    date = re.compile(schema_regex({"type": "string", "format": "date"}))
    assert date.fullmatch('"2024-10-11"') and not date.fullmatch('"２0２4-10-11"')  # fullwidth digits
