"""Numeric bounds as regular expressions, so that a grammar can enforce them while decoding.

outlines-core turns a JSON schema into a regular expression, but writes every integer as
`-?(0|[1-9][0-9]*)` whatever its `minimum` and `maximum`: a model could write an age of 999
and only validation would notice. A range of integers is a regular language, though:

    13..47   ->  1[3-9]|[2-3][0-9]|4[0-7]
    0..120   ->  [0-9]|[1-9][0-9]|1[0-1][0-9]|120

So each bounded number in the schema is swapped for a placeholder constant, the schema is
compiled as usual, and each placeholder's spot in the regex gets its range's expression.

The same pass spells out \\d and \\w as ASCII classes: JSON Schema means [0-9] (ECMA-262),
the Rust regex engine under outlines-core means any Unicode digit.

Covered: integers with any bounds (minimum / maximum / exclusive ones, one- or two-sided);
numbers (floats) with inclusive whole-number bounds on both sides, e.g. 0 <= p <= 1. Not
covered, left to validation (and re-asking): fractional bounds (ge=0.5), exclusive bounds on
floats, multipleOf on wide ranges. Exponents are never produced for a bounded float.
"""

from __future__ import annotations

import json
import math
from typing import Any

from outlines_core.json_schema import build_regex_from_schema

WHITESPACE = r"[ ]?"  # what may separate JSON tokens: one optional blank (a small model cannot wander off)
PLACEHOLDER = "__groklm_range_{}__"
ENUM_LIMIT = 1000  # multipleOf over at most this many integers becomes an explicit alternation


def schema_regex(schema: dict | str) -> str:
    """The regular expression of `schema`'s JSON documents, numeric bounds included."""
    prepared, patterns = with_placeholders(json.loads(schema) if isinstance(schema, str) else schema)
    return ascii_classes(fill(build_regex_from_schema(json.dumps(prepared), WHITESPACE), patterns))


ASCII_CLASSES = {"d": "0-9", "w": "A-Za-z0-9_"}


def ascii_classes(regex: str) -> str:
    """\\d and \\w as JSON Schema means them (ECMA-262: ASCII only). The regex engine under
    outlines-core reads them as Unicode classes, so a "date" could get a year written in
    fullwidth or N'Ko digits ("２2߄8-10-11"), which no validator accepts."""
    out, i, in_class = [], 0, False
    while i < len(regex):
        char = regex[i]
        if char == "\\" and i + 1 < len(regex):  # an escape: copy it, or spell the class out
            letter = regex[i + 1]
            body = ASCII_CLASSES.get(letter)
            out.append(regex[i : i + 2] if body is None else body if in_class else f"[{body}]")
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        out.append(char)
        i += 1
    return "".join(out)


def with_placeholders(schema: Any, patterns: dict[str, str] | None = None) -> tuple[Any, dict[str, str]]:
    """(the schema with each enforceable numeric range replaced by a placeholder constant,
    {placeholder: the range's regex})."""
    patterns = {} if patterns is None else patterns
    if isinstance(schema, list):
        return [with_placeholders(item, patterns)[0] for item in schema], patterns
    if not isinstance(schema, dict):
        return schema, patterns
    pattern = number_pattern(schema)
    if pattern is not None:
        name = PLACEHOLDER.format(len(patterns))
        patterns[name] = pattern
        return {"const": name}, patterns
    return {k: with_placeholders(v, patterns)[0] for k, v in schema.items()}, patterns


def fill(regex: str, patterns: dict[str, str]) -> str:
    """Put each range's regex where its placeholder (a quoted string) was compiled."""
    for name, pattern in patterns.items():
        regex = regex.replace(f'"{name}"', f"({pattern})")
    return regex


def number_pattern(schema: dict) -> str | None:
    """The regex of a bounded integer or number schema, or None (no bounds, or not covered)."""
    kind = schema.get("type")
    if kind not in ("integer", "number") or "enum" in schema or "const" in schema:
        return None
    if kind == "number":
        if {"exclusiveMinimum", "exclusiveMaximum", "multipleOf"} & schema.keys():
            return None
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is None or high is None or low != int(low) or high != int(high) or low > high:
            return None
        return float_range(int(low), int(high))
    low = math.ceil(schema["minimum"]) if "minimum" in schema else \
        math.floor(schema["exclusiveMinimum"]) + 1 if "exclusiveMinimum" in schema else None
    high = math.floor(schema["maximum"]) if "maximum" in schema else \
        math.ceil(schema["exclusiveMaximum"]) - 1 if "exclusiveMaximum" in schema else None
    if low is None and high is None or (low is not None and high is not None and low > high):
        return None
    if "multipleOf" in schema:
        step = schema["multipleOf"]
        if low is None or high is None or high - low >= ENUM_LIMIT or step != int(step):
            return None
        return "|".join(str(v) for v in range(low, high + 1) if v % int(step) == 0) or None
    return integer_range(low, high)


def integer_range(low: int | None, high: int | None) -> str:
    """Integers in [low, high] (None: unbounded on that side), as JSON writes them."""
    parts = []
    if high is None or high >= 0:  # the non-negative ones
        parts += magnitudes(max(low, 0) if low is not None else 0, high)
    if low is None or low < 0:  # the negative ones, by magnitude
        smallest = 1 if high is None or high >= 0 else -high
        parts += ["-" + group(magnitudes(smallest, None if low is None else -low))]
    return "|".join(parts)


def magnitudes(low: int, high: int | None) -> list[str]:
    """Alternatives for the non-negative integers in [low, high] (high None: no upper bound)."""
    if high is not None and low > high:
        return []
    top = high if high is not None else 10 ** len(str(low)) - 1
    parts = []
    for digits in range(len(str(low)), len(str(top)) + 1):
        a = max(low, 10 ** (digits - 1) if digits > 1 else 0)
        b = min(top, 10**digits - 1)
        parts += same_length(str(a), str(b))
    if high is None:  # and every longer number
        parts.append(f"[1-9][0-9]{{{len(str(low))},}}")
    return parts


def same_length(a: str, b: str) -> list[str]:
    """Alternatives for the digit strings of one length from a to b (a <= b), digit by digit:
    the part that shares a's first digit, whole blocks in between, the part under b's."""
    n = len(a)
    if a == b:
        return [a]
    if n == 1:
        return [f"[{a}-{b}]"]
    if a[0] == b[0]:
        return [a[0] + group(same_length(a[1:], b[1:]))]
    parts, first, last = [], int(a[0]), int(b[0])
    if a[1:] != "0" * (n - 1):
        parts.append(a[0] + group(same_length(a[1:], "9" * (n - 1))))
        first += 1
    tail = None
    if b[1:] != "9" * (n - 1):
        tail = b[0] + group(same_length("0" * (n - 1), b[1:]))
        last -= 1
    if first <= last:
        parts.append(f"[{first}-{last}][0-9]{{{n - 1}}}")
    return parts + ([tail] if tail else [])


def float_range(low: int, high: int) -> str:
    """Decimals (no exponent) in [low, high], for whole-number bounds."""
    parts = []
    if high >= 0:
        parts.append(decimal_magnitudes(max(low, 0), high))
    if low < 0:
        parts.append("-(" + decimal_magnitudes(max(-high, 0), -low) + ")")
    return "|".join(parts)


def decimal_magnitudes(low: int, high: int) -> str:
    """Non-negative decimals in [low, high]: a whole part in [low, high - 1] with any fraction,
    or exactly high (its fraction all zeros)."""
    exact = f"{high}(\\.0+)?"
    if low == high:
        return exact
    return f"({group(magnitudes(low, high - 1))})(\\.[0-9]+)?|{exact}"


def group(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else "(" + "|".join(parts) + ")"
