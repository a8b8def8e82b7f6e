"""Tracing: every backend call and tool call is a span, kept in a local SQLite file.

A span is one timed operation: a name, a start and an end, a parent (the span that was open
when it began), a status and attributes. Spans that share a root form a trace, e.g.

    invoke_agent calculator-agent          4.1 s
      step 1                               2.0 s
        chat runs/chat                     1.9 s  in 212 tok, out 31 tok, stop
        execute_tool calculator            0.0 s
      step 2 ...

Attribute names follow OpenTelemetry's GenAI conventions (gen_ai.request.model,
gen_ai.usage.input_tokens, gen_ai.usage.output_tokens, gen_ai.response.finish_reasons,
gen_ai.tool.name, error.type, ...), so the same spans mean the same thing in any OTel viewer.

Where: $GROKLM_TRACES if set (a file path, or "off" to record nothing), else
~/.groklm/traces.sqlite. `set_trace_path(path)` changes it in code. One row per span, written
when the span ends (a crash loses only the spans still open).

OTLP: if the `opentelemetry` package is importable, each span is mirrored to its global tracer
provider. That is a no-op until the application installs an SDK with an exporter, e.g.
`opentelemetry-sdk` + `opentelemetry-exporter-otlp`; groklm requires neither.

`groklm traces` lists the latest traces; `groklm traces --show ID` prints one as a tree.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from groklm.errors import ConfigError, DataError

ENV_PATH = "GROKLM_TRACES"
DEFAULT_PATH = Path("~/.groklm/traces.sqlite")
MAX_TEXT = 4000  # characters of message text kept per attribute: enough to debug, not a log archive

SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    span_id TEXT PRIMARY KEY, trace_id TEXT NOT NULL, parent_id TEXT, name TEXT NOT NULL,
    start_time REAL NOT NULL, end_time REAL NOT NULL, status TEXT NOT NULL, error TEXT,
    attributes TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS spans_by_trace ON spans (trace_id);
CREATE INDEX IF NOT EXISTS spans_by_start ON spans (start_time);
"""
COLUMNS = ["span_id", "trace_id", "parent_id", "name", "start_time", "end_time", "status", "error", "attributes"]


@dataclass
class Span:
    name: str
    trace_id: str
    parent_id: str | None
    span_id: str = field(default_factory=lambda: secrets.token_hex(8))  # OTel sizes: 8-byte span,
    start_time: float = field(default_factory=time.time)  # 16-byte trace ids, in hex
    end_time: float | None = None
    status: str = "ok"
    error: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    otel: Any = field(default=None, repr=False, compare=False)  # the mirrored OpenTelemetry span, if any

    def set(self, **attributes: Any) -> None:
        """Set attributes; use `update` for dotted names (gen_ai.usage.input_tokens)."""
        self.attributes.update(attributes)

    def update(self, attributes: dict[str, Any]) -> None:
        self.attributes.update({k: v for k, v in attributes.items() if v is not None})

    def fail(self, error: BaseException) -> None:
        self.status, self.error = "error", f"{type(error).__name__}: {error}"
        self.attributes["error.type"] = type(error).__name__

    @property
    def duration_s(self) -> float:
        return (self.end_time or time.time()) - self.start_time


_current: ContextVar[Span | None] = ContextVar("groklm_span", default=None)


def current_span() -> Span | None:
    return _current.get()


class Tracer:
    """Writes finished spans to a SQLite file (or nowhere, with path None)."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = None if path is None else Path(path).expanduser()
        self._connection: sqlite3.Connection | None = None
        self._pid = 0
        self._lock = threading.Lock()  # spans may end on several threads (a server, an async engine)
        self._otel = _otel_tracer()
        self._write_failure: str | None = None  # why spans are no longer recorded, once writing failed

    @contextmanager
    def span(self, name: str, attributes: dict[str, Any] | None = None, activate: bool = True) -> Iterator[Span]:
        """Open a span, a child of the current one. With activate=False it does not become the
        parent of spans opened inside it (needed for generators, which may finish elsewhere)."""
        parent = _current.get()
        span = Span(name, parent.trace_id if parent else secrets.token_hex(16), parent.span_id if parent else None)
        span.update(attributes or {})
        span.otel = self._otel_start(span, parent)
        token = _current.set(span) if activate else None
        try:
            yield span
        except BaseException as error:
            span.fail(error)
            raise
        finally:
            span.end_time = time.time()
            if token is not None:
                _current.reset(token)
            self._otel_end(span)
            self.write(span)

    # ---- storage -------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        """This process's connection, opened once: opening, committing and closing per span
        cost ~10 ms of syncing; kept open in write-ahead-log mode, a span costs well under 1 ms
        (synced at checkpoints; a power cut may lose the last spans, never the file)."""
        if self.path is None:
            raise ConfigError(f"tracing is off (${ENV_PATH}=off): there are no traces to read")
        if self._connection is None or self._pid != os.getpid():  # a forked child opens its own
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                connection = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
                # Look before writing anything: a file of some other program's (a database with
                # its own tables) must not get our table, or have its journal mode changed.
                self._check_schema(connection)
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")
                connection.executescript(SCHEMA)
            except (sqlite3.Error, OSError) as error:
                raise self._not_a_trace_file(error) from None
            self._connection, self._pid = connection, os.getpid()
        return self._connection

    def _check_schema(self, connection: sqlite3.Connection) -> None:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "spans" not in tables:
            raise self._not_a_trace_file(f"an SQLite database with other tables: {', '.join(sorted(tables)[:5])}")
        columns = [row[1] for row in connection.execute("PRAGMA table_info(spans)")]
        if columns and columns != COLUMNS:
            raise self._not_a_trace_file(f"its spans table has the columns {', '.join(columns)}")

    def _not_a_trace_file(self, why) -> DataError:
        return DataError(f"{self.path} is not a usable groklm trace file ({why}): read another file with "
                         f"`groklm traces --db PATH`, or set ${ENV_PATH} to a new path (or move this file away) "
                         "to record traces")

    def write(self, span: Span) -> None:
        """Record a finished span. Tracing watches the application and must never stop it: if
        the file cannot be written (not a trace file, a full disk, locked too long), one
        warning says why and later spans are not recorded."""
        if self.path is None or self._write_failure is not None:
            return
        row = (span.span_id, span.trace_id, span.parent_id, span.name, span.start_time, span.end_time,
               span.status, span.error, json.dumps(span.attributes, default=str))
        with self._lock:
            try:
                connection = self._connect()
                with connection:
                    connection.execute("INSERT OR REPLACE INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            except (DataError, sqlite3.Error) as error:
                self._write_failure = str(error)
                warnings.warn(f"traces are not recorded from now on: {error}", stacklevel=2)

    def _query(self, query: str, args: tuple) -> list[tuple]:
        if self.path is not None and not self.path.exists():
            return []
        with self._lock:
            try:
                return self._connect().execute(query, args).fetchall()
            except sqlite3.Error as error:  # a file damaged past its header fails only when read
                raise self._not_a_trace_file(error) from None

    def _rows(self, query: str, args: tuple) -> list[Span]:
        spans = []
        for span_id, trace, parent, name, start, end, status, error, attrs in self._query(query, args):
            try:
                attributes = json.loads(attrs)
            except (TypeError, json.JSONDecodeError) as decode_error:
                raise self._not_a_trace_file(f"span {span_id} has damaged attributes: {decode_error}") from None
            spans.append(Span(name, trace, parent, span_id, start, end, status, error, attributes))
        return spans

    def roots(self, last: int = 20) -> list[tuple[Span, int]]:
        """The root spans of the `last` most recent traces, newest first, with their span counts."""
        spans = self._rows("SELECT * FROM spans WHERE parent_id IS NULL ORDER BY start_time DESC LIMIT ?", (last,))
        counts = dict(self._query("SELECT trace_id, COUNT(*) FROM spans GROUP BY trace_id", ()))
        return [(span, counts.get(span.trace_id, 1)) for span in spans]

    def trace(self, trace_id: str) -> list[Span]:
        """Every span of a trace, by a unique prefix of its id (or of any of its spans' ids)."""
        found = self._query("SELECT DISTINCT trace_id FROM spans WHERE trace_id LIKE ? OR span_id LIKE ?",
                            (trace_id + "%", trace_id + "%"))
        if len(found) != 1:
            what = "no trace" if not found else f"{len(found)} traces"
            raise ConfigError(f"{what} match id {trace_id!r} in {self.path}; `groklm traces` lists them")
        return self._rows("SELECT * FROM spans WHERE trace_id = ? ORDER BY start_time", (found[0][0],))

    # ---- OpenTelemetry mirror ------------------------------------------------------------------

    def _otel_start(self, span: Span, parent: Span | None):
        if self._otel is None:
            return None
        from opentelemetry import trace

        context = trace.set_span_in_context(parent.otel) if parent is not None and parent.otel is not None else None
        return self._otel.start_span(span.name, context=context, start_time=int(span.start_time * 1e9))

    def _otel_end(self, span: Span) -> None:
        if span.otel is None:
            return
        from opentelemetry.trace import Status, StatusCode

        for key, value in span.attributes.items():
            span.otel.set_attribute(key, value if isinstance(value, (str, bool, int, float, list)) else str(value))
        if span.status == "error":
            span.otel.set_status(Status(StatusCode.ERROR, span.error))
        span.otel.end(end_time=int(span.end_time * 1e9))


def _otel_tracer():
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace.get_tracer("groklm")


_tracer: Tracer | None = None


def default_path() -> Path | None:
    value = os.environ.get(ENV_PATH)
    if value is None:
        return DEFAULT_PATH.expanduser()
    return None if value.strip().lower() in ("off", "0", "none", "") else Path(value).expanduser()


def get_tracer() -> Tracer:
    """The process-wide tracer, created from $GROKLM_TRACES on first use."""
    global _tracer
    if _tracer is None:
        _tracer = Tracer(default_path())
    return _tracer


def set_trace_path(path: str | os.PathLike | None) -> Tracer:
    """Record to `path` from now on (None: record nothing)."""
    global _tracer
    _tracer = Tracer(path)
    return _tracer


def span(name: str, attributes: dict[str, Any] | None = None, activate: bool = True):
    """`with span("extract Person", {...}) as s:` on the process-wide tracer."""
    return get_tracer().span(name, attributes, activate)


def clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


def messages_attribute(messages: list[dict]) -> str:
    """Messages as JSON text for gen_ai.input.messages, each content clipped."""
    return json.dumps([{**m, "content": clip(str(m.get("content") or ""))} for m in messages], ensure_ascii=False)


# ---- reading: the `groklm traces` views ----------------------------------------------------------


def _summary(span: Span) -> str:
    a = span.attributes
    parts = [f"{span.duration_s:.2f}s"]
    if "gen_ai.usage.input_tokens" in a or "gen_ai.usage.output_tokens" in a:
        parts.append(f"in {a.get('gen_ai.usage.input_tokens', '?')} / out {a.get('gen_ai.usage.output_tokens', '?')} tok")
    if a.get("gen_ai.response.finish_reasons"):
        parts.append(",".join(a["gen_ai.response.finish_reasons"]))
    if span.status == "error":
        parts.append(f"ERROR {span.error}")
    return "  ".join(parts)


def format_list(roots: list[tuple[Span, int]]) -> str:
    if not roots:
        return "no traces yet"
    lines = [f"{'id':<12} {'started':<19} {'spans':>5}  {'name':<32} summary"]
    for s, count in roots:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.start_time))
        lines.append(f"{s.trace_id[:12]:<12} {started:<19} {count:>5}  {s.name[:32]:<32} {_summary(s)}")
    return "\n".join(lines)


SHOWN_ATTRIBUTES = ("gen_ai.tool.call.arguments", "gen_ai.tool.call.result", "groklm.attempt", "groklm.validation_errors",
                    "groklm.step.kind", "gen_ai.output.messages")


def format_tree(spans: list[Span], details: bool = True) -> str:
    """A trace as an indented tree: children under their parent, in start order."""
    children: dict[str | None, list[Span]] = {}
    for s in spans:
        children.setdefault(s.parent_id, []).append(s)
    known = {s.span_id for s in spans}
    roots = [s for s in spans if s.parent_id not in known]
    lines = [f"trace {spans[0].trace_id}" if spans else "empty trace"]

    def walk(span: Span, depth: int) -> None:
        pad = "  " * depth
        lines.append(f"{pad}{span.name}  [{_summary(span)}]  ({span.span_id})")
        if details:
            for key in SHOWN_ATTRIBUTES:
                if key in span.attributes:
                    value = str(span.attributes[key]).replace("\n", "\\n")
                    lines.append(f"{pad}    {key}: {clip(value, 300)}")
        for child in children.get(span.span_id, []):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 1)
    return "\n".join(lines)


def span_dict(span: Span) -> dict:
    return {"name": span.name, "trace_id": span.trace_id, "span_id": span.span_id, "parent_id": span.parent_id,
            "start_time": span.start_time, "duration_s": round(span.duration_s, 4), "status": span.status,
            "error": span.error, "attributes": span.attributes}
