"""Tools: typed functions -> JSON schemas, validated calls, errors as observations, built-ins."""

from __future__ import annotations

import json
from enum import Enum
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from groklm.apps.tools import (
    Tool,
    as_tools,
    calculator,
    parse_docstring,
    run_tool,
    search_tool,
)
from groklm.calculator import evaluate
from groklm.errors import ConfigError

from helpers.rag import HashEmbedder, doc

pytestmark = pytest.mark.usefixtures("traces")  # every apps test records its spans in its own file


class Unit(str, Enum):
    celsius = "c"
    fahrenheit = "f"


class Place(BaseModel):
    city: str
    country: str = "FR"


def forecast(place: Place, days: int = Field(1, ge=1, le=7), unit: Unit = Unit.celsius,
             hours: list[int] | None = None, mode: Literal["brief", "full"] = "brief") -> dict:
    """The weather forecast for a place.

    Uses the national weather service.

    Args:
        place: where, e.g. {"city": "Lyon"}
        days (int): how many days ahead,
            at most a week
        unit: c or f
    Returns:
        a dict
    """
    if place.city == "Atlantis":
        raise LookupError("no weather under the sea")
    return {"city": place.city, "days": days, "unit": unit.value, "hours": hours, "mode": mode}


def test_the_schema_comes_from_the_signature_and_docstring():
    tool = Tool(forecast)
    spec = tool.spec()
    assert spec["type"] == "function" and spec["function"]["name"] == "forecast"
    assert spec["function"]["description"] == "The weather forecast for a place."
    schema = spec["function"]["parameters"]
    assert schema["required"] == ["place"] and schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["days"] == {"default": 1, "description": "how many days ahead, at most a week", "maximum": 7,
                             "minimum": 1, "type": "integer"}
    assert props["mode"]["enum"] == ["brief", "full"] and props["unit"]["description"] == "c or f"
    assert props["place"]["description"] == 'where, e.g. {"city": "Lyon"}'
    place_schema = schema["$defs"]["Place"]
    assert place_schema["required"] == ["city"] and "title" not in place_schema["properties"]["city"]
    assert '"title"' not in json.dumps(schema)  # pydantic's titles are dropped: fewer tokens for the model
    assert parse_docstring(None) == ("", {})
    assert parse_docstring("Add.\n\nArgs:\n    a: first\n    b (int): second\n") == ("Add.", {"a": "first", "b": "second"})


def test_calls_are_validated_and_every_mistake_becomes_an_observation():
    tool = Tool(forecast)
    good = tool.call('{"place": {"city": "Lyon"}, "days": "3", "unit": "f", "hours": [9]}')
    assert good.ok and good.value == {"city": "Lyon", "days": 3, "unit": "f", "hours": [9], "mode": "brief"}
    assert json.loads(good.content) == good.value
    cases = {
        '{"place": {"city": "Lyon"}, "days": 9}': "days: Input should be less than or equal to 7 (got 9)",
        '{"days": 2}': "place: Field required",
        '{"place": {"city": "Lyon"}, "unit": "k"}': "unit: Input should be 'c' or 'f'",
        '{"place": {"city": "Lyon"}, "colour": 1}': "colour: Extra inputs are not permitted",
        '{"place": ': "not valid JSON",
        "[1, 2]": "must be a JSON object",
        '{"place": {"city": "Atlantis"}}': "error: LookupError: no weather under the sea",
    }
    for arguments, says in cases.items():
        result = tool.call(arguments)
        assert not result.ok and says in result.content and result.content.startswith("error"), (arguments, result)
    tools = as_tools([forecast, calculator])
    assert run_tool(tools, "calculator", {"expression": "2 ** 10"}).content == "1024"
    unknown = run_tool(tools, "weather", "{}")
    assert not unknown.ok and "no tool 'weather'" in unknown.content and "forecast, calculator" in unknown.content
    assert tool(Place(city="Oslo"), days=2)["days"] == 2  # a Tool is still the function


def test_functions_that_cannot_be_tools_are_refused():
    def untyped(x):
        return x

    def varargs(*xs: int):
        return xs

    with pytest.raises(ConfigError, match="needs a type annotation"):
        Tool(untyped)
    with pytest.raises(ConfigError, match=r"\*xs"):
        Tool(varargs)
    with pytest.raises(ConfigError, match="tool name"):
        Tool(calculator, name="has space")
    with pytest.raises(ConfigError, match="two tools"):
        as_tools([calculator, Tool(forecast, name="calculator")])


def test_calculator_walks_the_tree_and_never_evals():
    for expression, value in [("(17 + 3) * 2.5", "50"), ("7 / 2", "3.5"), ("7 // 2", "3"), ("-2 ** 2", "-4"),
                              ("0.1 + 0.2", "0.3"), ("2 ** 64", str(2**64)), ("10 % 4", "2")]:
        assert calculator(expression) == value, expression
        assert float(value) == pytest.approx(float(eval(expression)))  # the oracle, on trusted input only
    tool = Tool(calculator)
    for bad, says in [("__import__('os').system('true')", "unsupported"), ("1/0", "division by zero"),
                      ("2 ** 10000", "too large"), ("x + 1", "unsupported"), ("(1", "cannot parse"),
                      ("True + 1", "unsupported"), ("9 ** 60 * 9 ** 60 * 9 ** 60", "digits")]:
        result = tool.call({"expression": bad})
        assert not result.ok and says in result.content, (bad, result.content)
    # The synthetic tool task keeps its own, smaller language on the same evaluator.
    from groklm.tasks.tool import calculate as task_calculator

    assert task_calculator("17*3") == "51" and task_calculator("7/2") == "error" and task_calculator("1.5+1") == "error"
    assert evaluate("17*3") == 51


def test_search_documents_over_a_rag_index(tmp_path):
    from groklm.apps.rag.index import Index

    index = Index.create(tmp_path / "idx", HashEmbedder(), max_tokens=40, overlap=5)
    index.upsert([doc("/d/cats.txt", "Cats purr when they are content."),
                  doc("/d/manual.pdf", "Error E42 means the fuel filter is clogged.", format="pdf", page=4)])
    tool = search_tool(index, k=1)
    assert tool.name == "search_documents" and tool.parameters["required"] == ["query"]
    result = tool.call({"query": "what does error E42 mean"})
    assert result.ok and result.content.startswith("[untrusted data from the document collection")
    assert "\n<<<\n[1] (/d/manual.pdf, page 4) Error E42 means the fuel filter" in result.content
    assert "Cats" not in result.content
