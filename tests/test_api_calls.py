"""Calling APIs from their documentation: the catalog, its splits, the training chats, the grading.

A three-API catalog written here makes every rule visible: a weather API with an enum said in
words ("in Fahrenheit" -> "f") and a default, a timer with an integer, and a held-out air-quality
API that shares the weather API's words (its sibling) and must never reach training.
"""

from __future__ import annotations

import json
import random

import pytest

from groklm.apps.api_calls.build import make_api_data, read_settings
from groklm.apps.api_calls.catalog import Api, Catalog, Param, load_catalog, save_catalog
from groklm.apps.api_calls.dataset import (
    ABSTAIN,
    Example,
    Retriever,
    build_index,
    call_key,
    examples,
    prompt,
    read_examples,
    training_chats,
)
from groklm.apps.api_calls.evaluate import OUTCOMES, evaluate_calls, first_call, grade
from groklm.apps.api_calls.synthetic import synthetic_catalog
from groklm.errors import ConfigError, DataError
from groklm.infer.tool_calls import to_chatml, tools_prompt

from helpers.apps import random_run
from helpers.backends import Scripted
from helpers.cli import run
from helpers.rag import HashEmbedder

CITIES = ("Paris", "Rome", "Oslo", "Lima", "Cairo", "Tokyo")
WEATHER = Api(
    "get_weather", "Current weather in a city: temperature and sky.",
    {"city": Param("string", "the city's name", CITIES),
     "unit": Param("string", "c for Celsius or f for Fahrenheit", (("c", "in Celsius"), ("f", "in Fahrenheit")), "c")},
    ("What is the weather in {city}?", "How warm is it in {city} {unit}?"),
)
TIMER = Api(
    "set_timer", "Start a countdown timer that rings after some minutes.",
    {"minutes": Param("integer", "length in minutes", tuple(range(1, 61)))},
    ("Set a timer for {minutes} minutes.", "Ring in {minutes} minutes."),
)
AIR = Api(
    "get_air_quality", "Air quality in a city: the level of one pollutant.",
    {"city": Param("string", "the city's name", CITIES),
     "pollutant": Param("string", "pm25 (fine particles) or o3 (ozone)", (("pm25", "fine particles"), ("o3", "ozone")))},
    ("How much {pollutant} is in the air of {city}?", "Air quality in {city}: {pollutant}?"),
)
CATALOG = Catalog((WEATHER, TIMER, AIR), frozenset({"get_air_quality"}))


def always(*names):
    """A retriever that finds the same pages for every request."""
    return lambda request, seen_only=False: list(names)


# ---- the catalog ---------------------------------------------------------------------------------


def test_an_api_is_a_json_schema_and_a_documentation_page():
    assert WEATHER.schema() == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "the city's name"},
            "unit": {"type": "string", "description": "c for Celsius or f for Fahrenheit", "enum": ["c", "f"], "default": "c"},
        },
        "required": ["city"],
    }
    page = WEATHER.doc()
    assert page.startswith("# get_weather\n\nCurrent weather in a city")
    assert '- unit: string (one of "c", "f"), optional, default "c". c for Celsius or f for Fahrenheit' in page
    assert "- city: string, required. the city's name" in page


def test_a_request_says_the_words_and_its_call_carries_the_values():
    rng = random.Random(0)
    for _ in range(50):
        request, arguments = WEATHER.draw(rng)
        assert arguments["city"] in request
        assert list(arguments) == [name for name in WEATHER.parameters if name in arguments]  # schema order
        if "unit" in arguments:
            assert {"c": "in Celsius", "f": "in Fahrenheit"}[arguments["unit"]] in request
            assert arguments["unit"] not in request.split()


def test_two_parameters_of_one_request_never_take_the_same_value():
    route = Api("get_route", "A route between two cities.",
                {"origin": Param("string", "from", CITIES[:2]), "destination": Param("string", "to", CITIES[:2]),
                 "direct": Param("boolean", "no changes", (True, False)), "stops": Param("integer", "stops on the way", (0, 1))},
                ("From {origin} to {destination} with {stops} stops, direct: {direct}",))
    rng = random.Random(0)
    draws = [route.draw(rng)[1] for _ in range(100)]
    assert all(d["origin"] != d["destination"] for d in draws)
    # True == 1 in Python, yet a boolean True does not keep the integer 1 from being drawn
    assert any(d["stops"] == 1 and d["direct"] is True for d in draws)


def test_the_same_call_is_the_same_whether_defaults_are_written_or_not():
    assert WEATHER.canonical({"city": "Oslo"}) == WEATHER.canonical({"city": "Oslo", "unit": "c"})
    assert WEATHER.canonical({"city": "Oslo"}) != WEATHER.canonical({"city": "Oslo", "unit": "f"})
    assert TIMER.canonical({"minutes": 5}) == TIMER.canonical({"minutes": 5.0})


@pytest.mark.parametrize("apis, held_out, message", [
    ((WEATHER, WEATHER), set(), "twice"),
    ((WEATHER,), {"get_air_quality"}, "not in the catalog"),
    ((WEATHER,), {"get_weather"}, "nothing is left to train on"),
    ((Api("bad name!", "x", {}, ("hi",)),), set(), "a name is"),
    ((Api("t", "x", {"n": Param("integer", "", (1,))}, ("go {m}",)),), set(), "unknown parameters"),
    ((Api("t", "x", {"n": Param("integer", "", (1,))}, ("go",)),), set(), "leaves out required"),
    ((Api("t", "x", {"n": Param("integer", "", ("1",))}, ("{n}",)),), set(), "not a integer"),
    ((Api("t", "x", {"n": Param("integer", "", (True,))}, ("{n}",)),), set(), "not a integer"),
    ((Api("t", "x", {"n": Param("date", "", ("1",))}, ("{n}",)),), set(), "type 'date'"),
    ((Api("t", "x", {"n": Param("integer", "", (1,))}, ("{n",)),), set(), "not a format string"),
])
def test_a_catalog_that_would_make_wrong_data_is_refused(apis, held_out, message):
    with pytest.raises(DataError, match=message):
        Catalog(apis, frozenset(held_out))


def test_the_catalog_file_round_trips(tmp_path):
    save_catalog(CATALOG, tmp_path / "apis.json")
    assert load_catalog(tmp_path / "apis.json") == CATALOG
    (tmp_path / "broken.json").write_text('{"apis": [{"name": "x"}]}')
    with pytest.raises(DataError, match="lacks a field"):
        load_catalog(tmp_path / "broken.json")
    with pytest.raises(DataError, match="does not exist"):
        load_catalog(tmp_path / "missing.json")


def test_the_built_in_set_has_sixty_apis_and_ten_held_out_each_with_enough_calls():
    catalog = synthetic_catalog()
    assert len(catalog.apis) >= 60 and len(catalog.held_out) == 10
    for api in catalog.apis:
        calls = {call_key(api, api.draw(rng)[1]) for rng in map(random.Random, range(300))}
        assert len(calls) >= 20, api.name


# ---- splits and training chats -----------------------------------------------------------------------


def test_no_test_call_is_trained_on_and_held_out_apis_never_are():
    train, test, heldout = examples(CATALOG, "train", 60), examples(CATALOG, "test", 6), examples(CATALOG, "heldout", 10)
    assert {call_key(CATALOG.get(e.api), e.arguments) for e in train}.isdisjoint(
        call_key(CATALOG.get(e.api), e.arguments) for e in test)
    assert {e.api for e in train} == {e.api for e in test} == {"get_weather", "set_timer"}
    assert {e.api for e in heldout} == {"get_air_quality"}
    assert examples(CATALOG, "train", 60) == train  # the same every time
    with pytest.raises(DataError, match="too few distinct test requests"):
        examples(CATALOG, "test", 100)
    with pytest.raises(DataError, match="held-out"):
        training_chats(CATALOG, heldout[:1], always("get_air_quality"))


def test_a_training_chat_shows_the_pages_as_tools_and_ends_in_the_call():
    items = examples(CATALOG, "train", 20)
    chats, counts = training_chats(CATALOG, items, always("set_timer", "get_weather"), no_docs=0.0)
    assert counts == {"with_docs": 20, "without_docs": 0, "abstain": 0}
    for example, chat in zip(items, chats):
        system, user, assistant = chat["messages"]
        assert user == {"role": "user", "content": example.request}
        assert assistant == {"role": "assistant", "content": example.call()}
        offered = [line.split("(")[0] for line in system["content"].splitlines()[3:]]
        assert sorted(offered) == ["get_weather", "set_timer"]
        # exactly what a backend renders for the same request with these tools
        assert [system, user] == to_chatml([user], [CATALOG.get(name).spec() for name in offered])
    orders = {tuple(line.split("(")[0] for line in c["messages"][0]["content"].splitlines()[3:]) for c in chats}
    assert len(orders) == 2  # shuffled: the right page is not always first


def test_when_the_retriever_misses_the_chat_teaches_abstaining_and_without_pages_the_bare_call():
    items = examples(CATALOG, "train", 20)
    missed, counts = training_chats(CATALOG, items, always("set_timer"), no_docs=0.0)
    for example, chat in zip(items, missed):
        want = example.call() if example.api == "set_timer" else ABSTAIN
        assert chat["messages"][-1]["content"] == want
    assert counts["abstain"] == sum(e.api == "get_weather" for e in items) > 0
    bare, counts = training_chats(CATALOG, items, always("set_timer"), no_docs=1.0)
    assert counts["without_docs"] == 20 and all(len(c["messages"]) == 2 for c in bare)
    with pytest.raises(ConfigError, match="share"):
        training_chats(CATALOG, items, always(), no_docs=1.5)


def test_the_retriever_finds_pages_in_a_rag_index_and_keeps_held_out_ones_from_training(tmp_path):
    index = build_index(CATALOG, tmp_path / "docs", tmp_path / "index", HashEmbedder())
    assert (tmp_path / "docs" / "set_timer.md").read_text() == TIMER.doc()
    retriever = Retriever(index, CATALOG, k=2)
    request = "How much ozone is in the air of Oslo? Air quality, pollutant"
    assert retriever(request)[0] == "get_air_quality"
    assert "get_air_quality" not in retriever(request, seen_only=True)
    assert retriever("Set a countdown timer for 5 minutes")[0] == "set_timer"


# ---- grading ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reply, outcome", [
    ('CALL get_weather({"city": "Oslo", "unit": "f"})', "correct"),
    ('Sure.\nCALL get_weather({"unit": "f", "city": "Oslo"})', "correct"),
    ('CALL get_weather({"city": "Oslo"})', "wrong_arguments"),  # the default is c, not f
    ('CALL get_weather({"city": "Oslo", "unit": "f"', "no_call"),  # not a call line
    ("CALL get_weather(city=Oslo)", "wrong_arguments"),
    ('CALL get_air_quality({"city": "Oslo", "pollutant": "o3"})', "wrong_api"),
    ('CALL weather_now({"city": "Oslo"})', "hallucinated"),
    (ABSTAIN, "no_call"),
])
def test_a_reply_is_graded_by_its_first_call(reply, outcome):
    example = Example("Weather in Oslo in Fahrenheit?", "get_weather", {"city": "Oslo", "unit": "f"})
    assert grade(CATALOG, example, first_call(reply)) == outcome


def test_each_condition_offers_its_pages_and_the_rates_add_up():
    items = examples(CATALOG, "test", 6)
    right = [e.call() for e in items]
    backend = Scripted([*right, "I do not know.", *right[1:], *right])
    report = evaluate_calls(backend, CATALOG, items, "none", batch_size=4)
    assert report["correct"] == 1.0 and report["n"] == 6
    assert all(len(sent["messages"]) == 1 and sent["tools"] is None for sent in backend.sent)  # no pages at all
    report = evaluate_calls(backend, CATALOG, items, "retrieved", retriever=always("set_timer"))
    assert report["no_call"] == pytest.approx(1 / 6) and report["correct"] == pytest.approx(5 / 6)
    assert report["recall"] == sum(e.api == "set_timer" for e in items) / 6
    assert sum(report[o] for o in OUTCOMES) == pytest.approx(1.0)
    report = evaluate_calls(backend, CATALOG, items, "oracle")
    for example, sent in zip(items, backend.sent[-6:]):
        assert sent["messages"] == prompt(CATALOG, example.request, [example.api])
        assert tools_prompt([CATALOG.get(example.api).spec()]) == sent["messages"][0]["content"]
    assert [row["offered"] for row in report["rows"]] == [[e.api] for e in items]
    with pytest.raises(ConfigError, match="conditions are"):
        evaluate_calls(backend, CATALOG, items, "psychic")


# ---- the commands ------------------------------------------------------------------------------------------


def test_make_writes_a_whole_directory_and_eval_reads_it(tmp_path, capsys):
    save_catalog(CATALOG, tmp_path / "apis.json")
    out = tmp_path / "data"
    code, printed, err = run(capsys, "apis", "make", "--catalog", str(tmp_path / "apis.json"), "--out", str(out),
                             "--train", "30", "--test", "5", "--heldout", "4", "--k", "2")
    assert code == 0, err
    assert "30 training chats" in printed
    settings = read_settings(out)
    assert settings["held_out"] == ["get_air_quality"] and settings["k"] == 2
    assert sum(settings["chats"][key] for key in ("with_docs", "without_docs")) == 30
    assert len(read_examples(out / "heldout.jsonl")) == 4
    assert sorted(p.stem for p in (out / "docs").iterdir()) == ["get_air_quality", "get_weather", "set_timer"]
    code, _, err = run(capsys, "apis", "make", "--catalog", str(tmp_path / "apis.json"), "--out", str(out))
    assert code != 0 and "--force" in err

    code, printed, err = run(capsys, "apis", "eval", str(out), "--backend", f"local:{random_run()}", "--n", "2",
                             "--conditions", "none,retrieved", "--json", "--out", str(tmp_path / "report.json"))
    assert code == 0, err
    summary = json.loads(printed)
    assert [(r["split"], r["condition"], r["n"]) for r in summary["results"]] == [
        ("heldout", "none", 2), ("heldout", "retrieved", 2), ("test", "none", 2), ("test", "retrieved", 2)]
    assert all(sum(r[o] for o in OUTCOMES) == pytest.approx(1.0) for r in summary["results"])
    assert len(json.loads((tmp_path / "report.json").read_text())["results"][0]["rows"]) == 2


def test_eval_refuses_a_half_made_directory_and_unknown_conditions(tmp_path, capsys):
    code, _, err = run(capsys, "apis", "eval", str(tmp_path), "--backend", "local:nowhere")
    assert code != 0 and "not a whole" in err and "Traceback" not in err
    code, _, err = run(capsys, "apis", "eval", str(tmp_path), "--backend", "local:nowhere", "--conditions", "psychic")
    assert code != 0 and "--conditions" in err


def test_a_catalog_that_holds_nothing_out_makes_no_heldout_split(tmp_path, capsys):
    settings = make_api_data(Catalog((WEATHER, TIMER), frozenset()), tmp_path / "data", HashEmbedder(), train=10,
                             test=4, heldout=4, k=1)
    assert settings["heldout"] == 0 and not (tmp_path / "data" / "heldout.jsonl").exists()
    code, _, err = run(capsys, "apis", "eval", str(tmp_path / "data"), "--backend", "local:nowhere", "--conditions", "none")
    assert code != 0 and "holds no API out" in err
