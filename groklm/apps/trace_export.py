"""Traces become training data: rated completions, corrections and classifications as JSONL.

    sft       {"messages": [...prompt, reply]}: answers rated good, and every correction (as the reply)
    kto       {"prompt": [...], "completion": {assistant message}, "label": true|false}: every rated
              reply (label: good or not), and every correction (label true)
    dpo       {"prompt": [...], "chosen": [correction], "rejected": [reply]}: a correction against
              the reply it corrects
    classify  {"text", "label", "labels", "confidence", "teacher", "instructions"}: the apps'
              classify() calls, one line per text (`groklm distill --data` reads the texts; the
              record is also a teacher-label cache line for it)

A trace's completion is its root span when that is a chat call (a served completion: its first
choice, the one the chat page shows), else its last chat span (an app's final answer; for an
extraction, the validated reply to the first call's prompt, without the re-asks in between). A
trace's verdict is its latest feedback; an extraction that passed validation and has none
counts as good (its schema accepted it). Texts that tracing clipped (the apps keep 4000
characters per message) are not what was said, and are never exported.

Filters select traces by when their root started, their app (`groklm.app` attribute, or the
root span's name or its first word), a tool they called, and their feedback. Identical lines
are written once. Every text (messages, replies, corrections, classified texts) passes through the
redaction hooks first: regexes (named presets or your own), whose matches become "[REDACTED]",
or any function str -> str.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from groklm.apps.tracing import Feedback, Span, Tracer, was_clipped
from groklm.errors import ConfigError, DataError
from groklm.jsonl import write_jsonl
from groklm.tokenizer.chat import check_messages

FORMATS = ("sft", "kto", "dpo", "classify")
FEEDBACK_FILTERS = ("any", "rated", "good", "bad", "corrected", "unrated")
REDACTED = "[REDACTED]"
# Common personal data, by name; anything else is a regex of your own.
REDACTION_PRESETS = {
    "email": r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+",
    "phone": r"\+?\d[\d ().-]{7,}\d",
    "ipv4": r"\b(?:\d{1,3}\.){3}\d{1,3}\b",
}


@dataclass
class Selection:
    """Which traces to export. Times are seconds since the epoch; None means no limit."""

    since: float | None = None
    until: float | None = None
    app: str | None = None
    tool: str | None = None
    feedback: str = "any"

    def __post_init__(self):
        if self.feedback not in FEEDBACK_FILTERS:
            raise ConfigError(f"feedback filter must be one of {', '.join(FEEDBACK_FILTERS)}, got {self.feedback!r}")

    def describe(self) -> str:
        parts = [f"{name}={value}" for name, value in
                 (("since", self.since), ("until", self.until), ("app", self.app), ("tool", self.tool)) if value is not None]
        return ", ".join([*parts, f"feedback={self.feedback}"])


def parse_time(text: str) -> float:
    """An ISO date or date-time ('2026-12-07', '2026-12-07T18:00') -> seconds since the epoch (local time)."""
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ConfigError(f"{text!r} is not a date or time: use ISO format, e.g. 2026-12-07 or 2026-12-07T18:30") from None


def redactor(hooks: Iterable[str | Callable[[str], str]]) -> Callable[[str], str]:
    """One function applying every hook in turn: a preset name, a regex, or a function str -> str."""
    steps: list[Callable[[str], str]] = []
    for hook in hooks:
        if callable(hook):
            steps.append(hook)
            continue
        try:
            pattern = re.compile(REDACTION_PRESETS.get(hook, hook))
        except re.error as error:
            raise ConfigError(f"redaction pattern {hook!r} is not a valid regex ({error}); presets: "
                              f"{', '.join(REDACTION_PRESETS)}") from None
        steps.append(lambda text, pattern=pattern: pattern.sub(REDACTED, text))

    def redact(text: str) -> str:
        for step in steps:
            text = step(text)
        return text

    return redact


def _redact_messages(messages: list[dict], redact: Callable[[str], str]) -> list[dict]:
    return [{**m, "content": redact(m["content"])} for m in messages]


# ---- reading traces -------------------------------------------------------------------------------


def _is_chat(span: Span) -> bool:
    return "gen_ai.input.messages" in span.attributes and "gen_ai.output.messages" in span.attributes


def _is_extraction(trace: list[Span]) -> bool:
    return trace[0].attributes.get("groklm.operation") == "extract"


def _completion(trace: list[Span]) -> tuple[list[dict], dict] | None:
    """(the prompt messages, the first choice's reply message) of a trace, or None if it has no chat
    call, or its messages are not plain text conversations, or tracing clipped them."""
    root = trace[0]
    if root.parent_id is None and _is_chat(root):
        asked = answered = root
    else:
        chats = [s for s in trace if _is_chat(s) and s.status == "ok"]
        if not chats:
            return None
        answered = max(chats, key=lambda s: s.end_time)
        # An extraction's retries re-ask with the failed reply and its errors: what it was asked is the first prompt.
        asked = min(chats, key=lambda s: s.start_time) if _is_extraction(trace) else answered
    try:
        prompt = check_messages(json.loads(asked.attributes["gen_ai.input.messages"]), "prompt")
        replies = json.loads(answered.attributes["gen_ai.output.messages"])
        reply = {**replies[0], "role": "assistant", "content": replies[0].get("content") or ""}
        check_messages([reply], "reply")
    except (json.JSONDecodeError, DataError, IndexError, TypeError, AttributeError):
        return None  # content parts, a damaged attribute: not a conversation to learn from
    if any(was_clipped(m["content"]) for m in [*prompt, reply]):
        return None
    return prompt, reply


def _matches(trace: list[Span], verdict: Feedback | None, selection: Selection) -> bool:
    root = trace[0]
    if selection.app is not None and selection.app not in (root.attributes.get("groklm.app"), root.name,
                                                           root.name.split(" ")[0]):
        return False
    if selection.tool is not None and not any(s.attributes.get("gen_ai.tool.name") == selection.tool for s in trace):
        return False
    wanted = selection.feedback
    return {"any": True, "rated": verdict is not None, "unrated": verdict is None,
            "good": verdict is not None and verdict.rating > 0, "bad": verdict is not None and verdict.rating < 0,
            "corrected": verdict is not None and verdict.correction is not None}[wanted]


# ---- records per format ---------------------------------------------------------------------------


def _conversation_records(form: str, trace: list[Span], verdict: Feedback | None, redact) -> list[dict]:
    if verdict is None and _is_extraction(trace) and trace[0].status == "ok":
        verdict = Feedback(trace[0].trace_id, trace[0].end_time, 1)  # validated against its schema
    found = _completion(trace)
    if found is None or verdict is None:
        return []
    prompt, reply = found
    prompt = _redact_messages(prompt, redact)
    reply = {**reply, "content": redact(reply["content"])}
    corrected = None if verdict.correction is None else {"role": "assistant", "content": redact(verdict.correction)}
    if form == "sft":
        accepted = corrected or (reply if verdict.rating > 0 else None)
        return [] if accepted is None else [{"messages": [*prompt, accepted]}]
    if form == "kto":
        rated = [{"prompt": prompt, "completion": reply, "label": verdict.rating > 0}]
        return rated + ([{"prompt": prompt, "completion": corrected, "label": True}] if corrected else [])
    if corrected is None or corrected["content"] == reply["content"]:  # dpo: a pair needs two different answers
        return []
    return [{"prompt": prompt, "chosen": [corrected], "rejected": [reply]}]


def _classification_records(trace: list[Span], verdict: Feedback | None, redact) -> list[dict]:
    """Each classify() call of the trace with its text. A bad verdict drops them; a correction
    that is one of the labels replaces the label (with confidence 1: a person said so)."""
    if verdict is not None and verdict.rating < 0 and verdict.correction is None:
        return []
    records = []
    for s in trace:
        a = s.attributes
        if a.get("groklm.operation") != "classify" or s.status != "ok" or not isinstance(a.get("groklm.classify.text"), str):
            continue
        label, confidence = a.get("groklm.label"), a.get("groklm.confidence")
        if verdict is not None and verdict.correction is not None:
            if verdict.correction not in a.get("groklm.labels", []):
                continue
            label, confidence = verdict.correction, 1.0
        records.append({"text": redact(a["groklm.classify.text"]), "label": label, "labels": a.get("groklm.labels"),
                        "confidence": confidence, "teacher": a.get("groklm.backend", a.get("gen_ai.request.model")),
                        "instructions": a.get("groklm.classify.instructions")})
    return records


def selected_traces(tracer: Tracer, selection: Selection) -> Iterator[tuple[list[Span], Feedback | None]]:
    """(trace, its latest verdict or None) for every trace the selection keeps, oldest first."""
    for trace in tracer.traces_between(selection.since, selection.until):
        verdicts = tracer.feedback(trace[0].trace_id)
        verdict = verdicts[-1] if verdicts else None
        if _matches(trace, verdict, selection):
            yield trace, verdict


def export_records(tracer: Tracer, form: str, selection: Selection | None = None,
                   redact: Iterable[str | Callable[[str], str]] = ()) -> list[dict]:
    """The records of `form` that the selected traces (default: all) make, each once, oldest trace first."""
    selection = selection or Selection()
    if form not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {form!r}")
    redact_text = redactor(redact)
    seen: set[str] = set()
    records = []
    for trace, verdict in selected_traces(tracer, selection):
        made = (_classification_records(trace, verdict, redact_text) if form == "classify"
                else _conversation_records(form, trace, verdict, redact_text))
        for record in made:
            key = json.dumps(record, sort_keys=True, ensure_ascii=False)
            if key not in seen:
                seen.add(key)
                records.append(record)
    return records


def export_traces(tracer: Tracer, form: str, out: str | Path, selection: Selection | None = None,
                  redact: Iterable[str | Callable[[str], str]] = ()) -> int:
    """Write the `form` records of the selected traces to `out` (JSONL, atomically); returns the count.
    An empty selection is a DataError that says which filters found nothing, and writes no file."""
    selection = selection or Selection()
    records = export_records(tracer, form, selection, redact)
    if not records:
        raise DataError(f"no {form} records in {tracer.path} for the selection ({selection.describe()}): "
                        f"nothing written to {out}" + ("" if form == "classify" else
                                                       "; sft, kto and dpo records need rated traces"))
    return write_jsonl(out, records)
