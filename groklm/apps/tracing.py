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

Feedback: `record_feedback(trace_id, rating, correction)` attaches a thumbs up (1) or down (-1),
and optionally a better answer, to a trace (the server's `POST /v1/feedback` does the same by
completion id). It goes to a second table, `feedback`, one row per verdict: a later verdict on the
same trace supersedes an earlier one. `groklm.apps.trace_export` turns traces and their feedback
into training data.

`groklm traces` lists the latest traces; `groklm traces show ID` prints one as a tree, with its feedback.
"""

from __future__ import annotations

import json
import os
import re
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
CREATE INDEX IF NOT EXISTS spans_by_response ON spans (json_extract(attributes, '$."gen_ai.response.id"'));
CREATE TABLE IF NOT EXISTS feedback (
    trace_id TEXT NOT NULL, time REAL NOT NULL, rating INTEGER NOT NULL, correction TEXT
);
CREATE INDEX IF NOT EXISTS feedback_by_trace ON feedback (trace_id);
"""
COLUMNS = ["span_id", "trace_id", "parent_id", "name", "start_time", "end_time", "status", "error", "attributes"]
FEEDBACK_COLUMNS = ["trace_id", "time", "rating", "correction"]
RESPONSE_ID = "gen_ai.response.id"  # the OpenAI completion id ("chatcmpl-..."), on a served completion's span


@dataclass
class Feedback:
    """A verdict on a trace: 1 (thumbs up) or -1 (down), and optionally the answer it should have been."""

    trace_id: str
    time: float
    rating: int
    correction: str | None = None


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
        for table, expected in (("spans", COLUMNS), ("feedback", FEEDBACK_COLUMNS)):
            columns = [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
            if columns and columns != expected:
                raise self._not_a_trace_file(f"its {table} table has the columns {', '.join(columns)}")

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

    def record_completion(self, completion_id: str, model: str, messages: list, replies: list[dict],
                          usage: dict, finish_reasons: list, start_time: float, end_time: float,
                          app: str = "serve") -> Span:
        """Record one served completion as a trace of its own: the request's messages and every
        choice's reply, unclipped (unlike the apps' spans: these are training data once rated),
        the usage and the latency (the span's duration). Mirrored to OpenTelemetry like any span."""
        span = Span(f"chat {model}", secrets.token_hex(16), None, start_time=start_time)
        span.update({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "groklm", "gen_ai.request.model": model,
                     RESPONSE_ID: completion_id, "groklm.app": app,
                     "gen_ai.input.messages": json.dumps(messages, ensure_ascii=False),
                     "gen_ai.output.messages": json.dumps(replies, ensure_ascii=False),
                     "gen_ai.usage.input_tokens": usage.get("prompt_tokens"),
                     "gen_ai.usage.output_tokens": usage.get("completion_tokens"),
                     "gen_ai.response.finish_reasons": finish_reasons})
        span.otel = self._otel_start(span, None)
        span.end_time = end_time
        self._otel_end(span)
        self.write(span)
        return span

    def find_trace(self, trace_or_completion_id: str) -> str | None:
        """The trace id of an exact trace id or served completion id, or None."""
        # The same expression as the spans_by_response index, so that SQLite uses it.
        found = self._query("""SELECT trace_id FROM spans WHERE trace_id = ?
                               OR json_extract(attributes, '$."gen_ai.response.id"') = ? LIMIT 1""",
                            (trace_or_completion_id, trace_or_completion_id))
        return found[0][0] if found else None

    def record_feedback(self, trace_or_completion_id: str, rating: int, correction: str | None = None) -> Feedback:
        """Attach a verdict to a recorded trace (by its id or its served completion's id). Unlike
        spans, feedback is something a person asked to store: a failure to store it is raised."""
        if isinstance(rating, bool) or rating not in (1, -1):
            raise ConfigError(f"rating must be 1 (good) or -1 (bad), got {rating!r}")
        if correction is not None and not isinstance(correction, str):
            raise ConfigError(f"correction must be text or None, got {type(correction).__name__}")
        trace_id = self.find_trace(trace_or_completion_id)
        if trace_id is None:
            raise ConfigError(f"no trace or completion has the id {trace_or_completion_id!r} in {self.path}")
        feedback = Feedback(trace_id, time.time(), rating, correction or None)
        with self._lock:
            try:
                with self._connect() as connection:
                    connection.execute("INSERT INTO feedback VALUES (?, ?, ?, ?)",
                                       (feedback.trace_id, feedback.time, feedback.rating, feedback.correction))
            except sqlite3.Error as error:
                raise self._not_a_trace_file(error) from None
        return feedback

    def feedback(self, trace_id: str) -> list[Feedback]:
        """Every verdict on a trace, oldest first (the last one is the one that counts)."""
        return [Feedback(*row) for row in
                self._query("SELECT * FROM feedback WHERE trace_id = ? ORDER BY time, rowid", (trace_id,))]

    def traces_between(self, since: float | None = None, until: float | None = None) -> list[list[Span]]:
        """Every trace whose root started in [since, until), oldest first, each as its spans in start order."""
        spans = self._rows("SELECT * FROM spans WHERE trace_id IN (SELECT trace_id FROM spans WHERE parent_id IS NULL "
                           "AND start_time >= ? AND start_time < ?) ORDER BY start_time",
                           (since if since is not None else float("-inf"), until if until is not None else float("inf")))
        traces: dict[str, list[Span]] = {}
        for s in spans:
            traces.setdefault(s.trace_id, []).append(s)
        return sorted(traces.values(), key=lambda t: t[0].start_time)

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


def record_feedback(trace_id: str, rating: int, correction: str | None = None) -> Feedback:
    """Rate a trace of this process's tracer: 1 (good) or -1 (bad), optionally with a corrected answer."""
    return get_tracer().record_feedback(trace_id, rating, correction)


CLIPPED = re.compile(r"\.\.\. \[\d+ more characters\]\Z")  # the mark `clip` leaves


def clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


def was_clipped(text: str) -> bool:
    """Whether `clip` cut this text: a recorded text that is not what was said, so not training data."""
    return CLIPPED.search(text) is not None


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


SHOWN_ATTRIBUTES = (RESPONSE_ID, "gen_ai.tool.call.arguments", "gen_ai.tool.call.result", "groklm.attempt", "groklm.validation_errors",
                    "groklm.step.kind", "gen_ai.output.messages")


def format_tree(spans: list[Span], details: bool = True, feedback: list[Feedback] = ()) -> str:
    """A trace as an indented tree: children under their parent, in start order; then its feedback."""
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
    for verdict in feedback:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(verdict.time))
        lines.append(f"feedback {when}: {'+1 (good)' if verdict.rating > 0 else '-1 (bad)'}")
        if verdict.correction:
            lines.append(f"    correction: {clip(verdict.correction, 300).replace(chr(10), chr(92) + 'n')}")
    return "\n".join(lines)


def span_dict(span: Span) -> dict:
    return {"name": span.name, "trace_id": span.trace_id, "span_id": span.span_id, "parent_id": span.parent_id,
            "start_time": span.start_time, "duration_s": round(span.duration_s, 4), "status": span.status,
            "error": span.error, "attributes": span.attributes}
