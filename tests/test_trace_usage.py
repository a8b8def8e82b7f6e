"""`groklm traces usage` and the table under `traces show`: calls, tokens, seconds and cost per
model, each call counted once (a parent that adds up its children's usage is not a call)."""

from __future__ import annotations

import json

import pytest

from groklm.apps import tracing
from groklm.apps.structured import classify
from groklm.apps.trace_usage import Price, calls, parse_prices, usage_by_model
from groklm.cli.main import main
from groklm.errors import ConfigError

from helpers.backends import Scripted


@pytest.fixture
def store(tmp_path):
    """An agent whose two chat steps went to "big" (the root adds them up), a judge call to
    "small" inside the same trace, and a served completion of "big"."""
    store = tracing.Tracer(tmp_path / "traces.sqlite")
    with store.span("invoke_agent helper", {"gen_ai.request.model": "big"}) as root:
        for _ in range(2):
            with store.span("chat big", {"gen_ai.request.model": "big", "gen_ai.usage.input_tokens": 100,
                                         "gen_ai.usage.output_tokens": 10}):
                pass
        with store.span("chat small", {"gen_ai.request.model": "small", "gen_ai.usage.input_tokens": 40,
                                       "gen_ai.usage.output_tokens": 4}):
            pass
        root.update({"gen_ai.usage.input_tokens": 240, "gen_ai.usage.output_tokens": 24})
    store.record_completion("chatcmpl-x", "big", [{"role": "user", "content": "hi"}],
                            [{"role": "assistant", "content": "hello"}], {"prompt_tokens": 5, "completion_tokens": 1},
                            ["stop"], 1000.0, 1002.0)
    return store


def test_each_call_is_counted_once_per_model(store):
    served, agent_trace = store.traces_between()  # oldest first: the completion is dated 1970
    assert {s.name for s in calls(agent_trace)} == {"chat big", "chat small"}  # not the root's total
    rows = {r.model: r for r in usage_by_model([agent_trace, served])}
    assert (rows["big"].calls, rows["big"].input_tokens, rows["big"].output_tokens) == (3, 205, 21)
    assert (rows["small"].calls, rows["small"].input_tokens, rows["small"].output_tokens) == (1, 40, 4)
    assert rows["big"].seconds >= 2.0 and rows["big"].cost is None


def test_prices_are_per_million_tokens_and_cost_is_per_model(store):
    prices = parse_prices(["big=2/8", "small=0.5"])
    assert prices == {"big": Price(2.0, 8.0), "small": Price(0.5, 0.5)}
    rows = {r.model: r for r in usage_by_model(store.traces_between(), prices)}
    assert rows["big"].cost == pytest.approx((205 * 2 + 21 * 8) / 1e6)
    assert rows["small"].cost_per_call == pytest.approx(44 * 0.5 / 1e6)


@pytest.mark.parametrize("spec", ["big", "=1/2", "big=x/2", "big=1/2/3", "big=-1/2"])
def test_a_malformed_price_says_how_to_write_one(spec):
    with pytest.raises(ConfigError, match="MODEL=IN/OUT"):
        parse_prices([spec])


def test_scoring_classification_records_its_usage_on_its_span(tmp_path):
    class Scorer(Scripted):
        def score(self, messages, replies):
            return [-0.1, -3.0][: len(replies)]

        def count_tokens(self, messages):
            return 7

    store = tracing.set_trace_path(tmp_path / "t.sqlite")
    try:
        classify(Scorer([], frozenset({"score"}), model="clf"), "WIN A PHONE", ["spam", "ham"])
    finally:
        tracing.set_trace_path(None)
    (row,) = usage_by_model(store.traces_between())
    assert (row.model, row.calls, row.input_tokens) == ("clf", 1, 14)  # the prompt, scored once per label


def test_the_usage_command_and_the_table_under_show(store, capsys):
    db = str(store.path)
    main(["traces", "usage", "--db", db, "--price", "small=1/1"])
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:2] == ["model", "calls"]
    assert any(line.split()[:2] == ["big", "3"] for line in table.splitlines())
    main(["traces", "usage", "--db", db, "--price", "small=1/1", "--json", "--app", "serve"])
    (served,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert served["model"] == "big" and served["calls"] == 1 and served["cost"] is None
    main(["traces", "show", store.find_trace("chatcmpl-x"), "--db", db])
    assert "s/call" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["traces", "usage", "--db", db, "--price", "nonsense"])
    assert "MODEL=IN/OUT" in capsys.readouterr().err
