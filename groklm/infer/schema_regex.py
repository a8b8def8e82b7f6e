"""JSON schemas as regular expressions: numeric bounds enforced, impossible schemas refused,
size bounded.

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
floats, multipleOf on wide ranges, bounds beyond 10**100. Exponents are never produced for a
bounded float.

A schema no document can satisfy is refused with the reason (ValueError), never silently
loosened: `minimum` above `maximum`, no integer or no multiple in the range, an empty `enum`,
`minLength` above `maxLength`, `multipleOf` that is not positive, a bound that is not a finite
number (JSON's 1e400 reads as infinity).

outlines-core writes an object's optional properties as every choice of the last one present
with all earlier ones optional: quadratic in their number (2000 optional properties make a
160 MB regex). So the regex's size is estimated before it is built, and a schema whose regex
would pass `max_chars` is refused with the estimate.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from outlines_core.json_schema import build_regex_from_schema

from groklm.errors import ConfigError

WHITESPACE = r"[ ]?"  # what may separate JSON tokens: one optional blank (a small model cannot wander off)
PLACEHOLDER = "__groklm_range_{}__"
ENUM_LIMIT = 1000  # multipleOf over at most this many integers becomes an explicit alternation
MAX_BOUND = 10**100  # bounds beyond it are left to validation (their regex would be all digits)
MAX_CHARS = 500_000  # the default limit on the regex's size (constrain.GrammarLimits raises it)
REF_DEPTH = 4  # $refs followed while estimating: outlines-core expands a recursive one 3 levels deep
DATA_KEYS = ("const", "enum", "default", "examples")  # JSON data inside a schema, not subschemas


def schema_regex(schema: dict | str, max_chars: int = MAX_CHARS) -> str:
    """The regular expression of `schema`'s JSON documents, numeric bounds included. A
    ConfigError, with the reason, for a schema no document satisfies, one outside the subset
    outlines-core translates (e.g. recursive), malformed JSON text, or a schema whose regex
    would pass `max_chars` characters."""
    try:
        return _schema_regex(json.loads(schema) if isinstance(schema, str) else schema, max_chars)
    except (ValueError, TypeError, RuntimeError) as exc:  # ours, json's and outlines-core's complaints
        raise ConfigError(f"unsupported JSON schema: {exc}") from exc


def _schema_regex(schema: Any, max_chars: int) -> str:
    estimate = estimated_chars(schema, schema)
    if estimate > max_chars:
        raise ValueError(f"the schema is too large to compile: its regex would have about {estimate} characters, "
                         f"over the limit of {max_chars} (objects with many optional properties grow quadratically; "
                         f"mark properties required, or raise the limit: groklm serve --grammar-max-chars)")
    prepared, patterns = with_placeholders(any_value(schema))
    return ascii_classes(fill(build_regex_from_schema(json.dumps(prepared), WHITESPACE), patterns))


GENERIC_CHARS = {"object": 7000, "array": 7000, None: 14000}  # outlines-core's regex for any object/array/value


def estimated_chars(schema: Any, root: Any, depth: int = 0) -> int:
    """An upper estimate of the size of outlines-core's regex for `schema`, without building it."""
    if not isinstance(schema, dict):
        return 20
    if isinstance(schema.get("$ref"), str):
        target = resolve(schema["$ref"], root)
        return 20 if depth >= REF_DEPTH or target is None else estimated_chars(target, root, depth + 1)
    size = 20 + sum(len(json.dumps(schema[key])) + 8 for key in ("const", "enum") if key in schema)
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list):
            size += sum(estimated_chars(item, root, depth) for item in schema[key])
    kind = schema.get("type")
    properties = schema.get("properties")
    if isinstance(properties, dict) and properties:
        required = {name for name in schema.get("required", []) if isinstance(name, str)} \
            if isinstance(schema.get("required"), list) else set()
        optional = sum(name not in required for name in properties)
        each = [len(name) + 24 + estimated_chars(sub, root, depth) for name, sub in properties.items()]
        size += sum(each) * (1 + (optional + 1) // 2)  # each optional one recurs in about half the alternatives
    elif kind == "object" or isinstance(kind, list) and "object" in kind:
        size += GENERIC_CHARS["object"]
    if isinstance(schema.get("items"), dict):
        size += 2 * estimated_chars(schema["items"], root, depth)  # the first item, then the rest
    elif kind == "array" or isinstance(kind, list) and "array" in kind:
        size += GENERIC_CHARS["array"]
    if isinstance(schema.get("prefixItems"), list):
        size += sum(estimated_chars(item, root, depth) for item in schema["prefixItems"])
    if kind == "string":
        size += 50  # outlines-core's string: "([^"\\...]|\\["\\/bfnrt])*"
    if isinstance(schema.get("pattern"), str):
        size += len(schema["pattern"])
    if "format" in schema:
        size += 500
    if kind is None and schema.keys() <= ANNOTATIONS | {"$defs", "definitions"}:
        size += GENERIC_CHARS[None]  # {}: any JSON value
    return size


def resolve(ref: str, root: Any) -> Any:
    """The subschema a local $ref ("#/$defs/Name") points at, or None."""
    if not ref.startswith("#"):
        return None
    node = root
    for part in ref[1:].split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


STRING_CHAR = r'"\\\x00-\x1F\x7F-\x9F'  # what a JSON string holds only escaped (outlines-core's set)
NEGATED_SHORTHANDS = {"S": r"\s", "W": r"\w", "D": r"\d"}
SAFE_CLASS = re.compile(r"(?:[A-Za-z0-9_ .,:;@#/+]|\\[dws]|[a-z]-[a-z]|[A-Z]-[A-Z]|[0-9]-[0-9])*")


def json_string_pattern(pattern: str) -> str:
    """A string schema's `pattern` as it may appear between the quotes of a JSON string.

    outlines-core pastes the pattern between quotes as it is, so `[^\\n]{1,400}`, `.` or `\\S`
    would let a model write a raw quote or control character and the document would not
    parse. Each construct that can match one is narrowed to the characters a JSON string may
    hold unescaped (and the value then never needs an escape): negated classes and shorthands
    exclude them, `.` becomes such a class, and a positive class that could hold one (a quote,
    an escape, a wide range) is intersected with them."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            letter = pattern[i + 1]
            out.append(f"[^{NEGATED_SHORTHANDS[letter]}{STRING_CHAR}]" if letter in NEGATED_SHORTHANDS else pattern[i : i + 2])
            i += 2
        elif char == ".":
            out.append(f"[^\\n{STRING_CHAR}]")
            i += 1
        elif char == "[":
            end = class_end(pattern, i)
            if end is None:  # unbalanced: let the regex parser say so
                out.append(pattern[i:])
                break
            body = pattern[i + 1 : end]
            if body.startswith("^") and "[" not in body:
                out.append(f"[{body}{STRING_CHAR}]")
            elif SAFE_CLASS.fullmatch(body):
                out.append(f"[{body}]")
            else:
                out.append(f"[[{body}]&&[^{STRING_CHAR}]]")
            i = end + 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


def class_end(pattern: str, start: int) -> int | None:
    """The index of the "]" that closes the class opened at `start` (nested classes, escapes,
    and a "]" right after "[" or "[^" are part of it), or None."""
    depth, i = 0, start
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if char == "[":
            depth += 1
            i += 1
            if pattern.startswith("^", i):
                i += 1
            if pattern.startswith("]", i):
                i += 1
            continue
        if char == "]":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


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
    check_satisfiable(schema)
    if isinstance(schema.get("pattern"), str):
        schema = {**schema, "pattern": json_string_pattern(schema["pattern"])}
    pattern = number_pattern(schema)
    if pattern is not None:
        name = PLACEHOLDER.format(len(patterns))
        patterns[name] = pattern
        return {"const": name}, patterns
    prepared = {}
    for key, value in schema.items():
        if key in DATA_KEYS:
            prepared[key] = value
        elif key in SCHEMA_MAPS and isinstance(value, dict):  # names are not keywords: walk only their schemas
            prepared[key] = {name: with_placeholders(any_value(sub), patterns)[0] for name, sub in value.items()}
        elif key in SCHEMA_LISTS and isinstance(value, list):
            prepared[key] = [with_placeholders(any_value(sub), patterns)[0] for sub in value]
        elif key in SCHEMA_KEYS:
            prepared[key] = with_placeholders(any_value(value), patterns)[0]
        else:
            prepared[key] = with_placeholders(value, patterns)[0]
    return prepared, patterns


SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")  # name -> subschema
SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
SCHEMA_KEYS = ("items", "additionalProperties", "contains", "not")
ANNOTATIONS = {"title", "description", "default", "examples", "$comment"}
ANY_VALUE = {"type": ["string", "number", "boolean", "null", "object", "array"]}


def any_value(schema: Any) -> Any:
    """`{}` (any JSON value) spelled out as a list of types. outlines-core writes `{}` as an
    alternation it does not group, so a property of schema `{}` split the whole object's regex
    in two: it accepted a bare `null` and refused `{"a": 1}`."""
    return ANY_VALUE if isinstance(schema, dict) and schema.keys() <= ANNOTATIONS else schema


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite_double(value: int | float) -> bool:
    """Does the number fit a double? JSON parsers (ours and outlines-core's) carry bounds as
    doubles: a float past the range arrives as inf, an integer past it cannot be converted."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def short(value: int | float) -> str:
    text = str(value)
    return text if len(text) <= 24 else f"{text[:8]}... (a number of {len(text.lstrip('-'))} digits)"


def check_satisfiable(schema: dict) -> None:
    """ValueError, with the reason, for keywords no value can satisfy."""
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
        if is_number(schema.get(key)) and not finite_double(schema[key]):
            raise ValueError(f"{key} must be a finite number within ±1.8e308 (a double), got {short(schema[key])}")
    if is_number(schema.get("multipleOf")) and schema["multipleOf"] <= 0:
        raise ValueError(f"multipleOf must be greater than 0, got {schema['multipleOf']}")
    if schema.get("enum") == []:
        raise ValueError("enum is empty: no value can match it; list at least one value")
    for key in ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"):
        if is_number(schema.get(key)) and (schema[key] < 0 or schema[key] != int(schema[key])):
            raise ValueError(f"{key} must be a whole number >= 0, got {schema[key]}")
    for low, high in (("minLength", "maxLength"), ("minItems", "maxItems"), ("minProperties", "maxProperties")):
        if is_number(schema.get(low)) and is_number(schema.get(high)) and schema[low] > schema[high]:
            raise ValueError(f"{low} {schema[low]} is greater than {high} {schema[high]}: no value can match")
    if schema.get("type") in ("integer", "number") and "enum" not in schema and "const" not in schema:
        check_range(schema)


def check_range(schema: dict) -> None:
    """ValueError when the bounds of a number or integer schema leave nothing in between."""
    low, high = schema.get("minimum"), schema.get("maximum")
    low_x, high_x = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    lows = [(v, False) for v in (low,) if is_number(v)] + [(v, True) for v in (low_x,) if is_number(v)]
    highs = [(v, False) for v in (high,) if is_number(v)] + [(v, True) for v in (high_x,) if is_number(v)]
    if not lows or not highs:
        return
    (a, a_open), (b, b_open) = max(lows), min(highs, key=lambda bound: (bound[0], not bound[1]))  # ties: open is tighter
    if a > b or a == b and (a_open or b_open):
        raise ValueError(f"no {schema['type']} is {'>' if a_open else '>='} {a} and {'<' if b_open else '<='} {b}")
    if schema["type"] == "integer":
        first = math.floor(a) + 1 if a_open else math.ceil(a)
        last = math.ceil(b) - 1 if b_open else math.floor(b)
        if first > last:
            raise ValueError(f"no integer lies between {a} and {b}")


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
    bounds = [schema[k] for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") if k in schema]
    if any(not is_number(v) or abs(v) >= MAX_BOUND for v in bounds):
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
        if not is_number(step) or low is None or high is None or high - low >= ENUM_LIMIT or step != int(step):
            return None
        multiples = [str(v) for v in range(low, high + 1) if v % int(step) == 0]
        if not multiples:
            raise ValueError(f"no multiple of {step} lies in [{low}, {high}]")
        return "|".join(multiples)
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
