"""Tracing: spans nest, land in SQLite with OpenTelemetry GenAI names, and `groklm traces` shows them."""

from __future__ import annotations

import json
import sqlite3

import pytest

from groklm.apps import tracing
from groklm.apps.backends import LocalBackend
from groklm.apps.tools import Tool, calculator
from groklm.cli.main import main
from groklm.errors import ConfigError

from helpers.apps import random_run

pytestmark = pytest.mark.usefixtures("traces")  # every apps test records its spans in its own file


def test_spans_nest_and_are_stored_with_errors(traces):
    with tracing.span("outer", {"a": 1}) as outer:
        with tracing.span("inner") as inner:
            inner.update({"gen_ai.usage.input_tokens": 5, "skipped": None})
        with pytest.raises(ZeroDivisionError), tracing.span("broken"):
            raise ZeroDivisionError("division by zero")
    spans = {s.name: s for s in traces.trace(outer.trace_id)}
    assert set(spans) == {"outer", "inner", "broken"}
    assert spans["inner"].parent_id == spans["broken"].parent_id == outer.span_id
    assert spans["outer"].parent_id is None and {s.trace_id for s in spans.values()} == {outer.trace_id}
    assert spans["inner"].attributes == {"gen_ai.usage.input_tokens": 5}
    assert spans["broken"].status == "error" and spans["broken"].attributes["error.type"] == "ZeroDivisionError"
    assert spans["outer"].end_time >= spans["inner"].end_time >= spans["inner"].start_time >= spans["outer"].start_time
    # The file is plain SQLite: any tool can read it.
    rows = sqlite3.connect(traces.path).execute("SELECT name, attributes FROM spans WHERE name='outer'").fetchall()
    assert rows == [("outer", json.dumps({"a": 1}))]
    # A prefix of the trace id (or of any span id) finds the trace; an unknown one is a clear error.
    assert len(traces.trace(outer.trace_id[:6])) == 3 and len(traces.trace(spans["inner"].span_id)) == 3
    with pytest.raises(ConfigError, match="no trace"):
        traces.trace("zzzz")


def test_backend_and_tool_calls_carry_genai_attributes(traces):
    backend = LocalBackend(random_run())
    with tracing.span("app") as root:
        reply = backend.chat([{"role": "user", "content": "Hi"}], max_tokens=5, seed=1)
        Tool(calculator).call('{"expression": "6*7"}', call_id="call_1")
        Tool(calculator).call('{"expression": "1/0"}')
    chat, good, bad = sorted((s for s in traces.trace(root.trace_id) if s.parent_id), key=lambda s: s.start_time)
    a = chat.attributes
    assert chat.name == f"chat {backend.model}" and a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == backend.model and a["gen_ai.provider.name"] == "groklm"
    assert a["gen_ai.usage.input_tokens"] == reply.usage.input_tokens == backend.count_tokens([{"role": "user", "content": "Hi"}])
    assert a["gen_ai.usage.output_tokens"] == reply.usage.output_tokens
    assert a["gen_ai.response.finish_reasons"] == [reply.finish_reason] and a["gen_ai.request.max_tokens"] == 5
    assert json.loads(a["gen_ai.input.messages"]) == [{"role": "user", "content": "Hi"}]
    assert json.loads(a["gen_ai.output.messages"])[0]["content"] == reply.text
    assert good.attributes["gen_ai.tool.name"] == "calculator" and good.attributes["gen_ai.tool.call.result"] == "42"
    assert good.attributes["gen_ai.tool.call.id"] == "call_1" and good.status == "ok"
    assert bad.status == "error" and "division by zero" in bad.error


def test_tracing_off_records_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(tracing.ENV_PATH, "off")
    monkeypatch.setattr(tracing, "_tracer", None)
    with tracing.span("nothing") as s:
        s.update({"x": 1})
    assert tracing.get_tracer().path is None and not list(tmp_path.iterdir())


def test_spans_are_mirrored_to_opentelemetry_when_an_sdk_is_installed(tmp_path):
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = tracing.Tracer(tmp_path / "t.sqlite")
    tracer._otel = provider.get_tracer("groklm")
    with tracer.span("invoke_agent a", {"gen_ai.operation.name": "invoke_agent"}), pytest.raises(ValueError), \
            tracer.span("chat m", {"gen_ai.usage.input_tokens": 3}):
        raise ValueError("no")
    chat, agent = exporter.get_finished_spans()
    assert chat.parent.span_id == agent.context.span_id and chat.context.trace_id == agent.context.trace_id
    assert chat.attributes["gen_ai.usage.input_tokens"] == 3 and chat.attributes["error.type"] == "ValueError"
    assert chat.status.status_code.name == "ERROR" and agent.attributes["gen_ai.operation.name"] == "invoke_agent"


def test_traces_command_lists_and_shows_a_tree(traces, capsys):
    for i in range(3):
        with tracing.span(f"extract Person{i}") as root:
            for attempt in (1, 2):
                usage = {"gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 4, "gen_ai.response.finish_reasons": ["stop"]}
                with tracing.span(f"attempt {attempt}", {"groklm.attempt": attempt}), tracing.span("chat m", usage):
                    pass
    main(["traces", "--last", "2"])
    listing = capsys.readouterr().out
    assert "extract Person2" in listing and "extract Person1" in listing and "extract Person0" not in listing
    assert f"{root.trace_id[:12]}" in listing and " 5  " in listing  # five spans in the trace
    main(["traces", "--show", root.trace_id[:8]])
    lines = capsys.readouterr().out.splitlines()
    tree = [line for line in lines if "[" in line]
    indents = [len(line) - len(line.lstrip()) for line in tree]
    assert [line.split("[")[0].strip() for line in tree] == ["extract Person2", "attempt 1", "chat m", "attempt 2", "chat m"]
    assert indents == [2, 4, 6, 4, 6]  # retries under their parent, calls under their attempt
    assert "in 10 / out 4 tok" in tree[2] and "groklm.attempt: 2" in "\n".join(lines)
    main(["traces", "--show", root.trace_id, "--json"])
    assert len(json.loads(capsys.readouterr().out)) == 5
    with pytest.raises(SystemExit):
        main(["traces", "--show", "nope"])
    assert "no trace" in capsys.readouterr().err
