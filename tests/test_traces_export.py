"""`groklm traces export`: rated completions, corrections and classifications become the JSONL
files that sft, KTO, dpo and distill read; filters, no duplicates, redaction, empty selections."""

from __future__ import annotations

import json

import pytest

from groklm.apps import tracing
from groklm.apps.trace_export import FEEDBACK_FILTERS, FORMATS, Selection, export_records, export_traces, parse_time, redactor
from groklm.cli import apps as cli_apps
from groklm.cli.main import main
from groklm.data.chat_data import load_preferences_jsonl, load_sft_jsonl
from groklm.errors import ConfigError, DataError
from groklm.jsonl import read_jsonl

USAGE = {"prompt_tokens": 3, "completion_tokens": 2}


def completion(store, cid: str, question: str, answer: str, when: float, app: str = "serve") -> None:
    store.record_completion(cid, "m", [{"role": "user", "content": question}], [{"role": "assistant", "content": answer}],
                            USAGE, ["stop"], when, when + 0.5, app=app)


@pytest.fixture
def store(tmp_path):
    """Five served completions a day apart: rated good, rated good again (the same exchange),
    corrected, rated bad, unrated; and an agent trace that called the calculator, rated good."""
    store = tracing.Tracer(tmp_path / "traces.sqlite")
    day = 86400.0
    start = parse_time("2026-01-01")
    completion(store, "chatcmpl-a", "Mail bob@example.com", "Done, bob@example.com", start)
    completion(store, "chatcmpl-b", "Mail bob@example.com", "Done, bob@example.com", start + day)
    completion(store, "chatcmpl-c", "2+2?", "5", start + 2 * day)
    completion(store, "chatcmpl-d", "Capital of France?", "Rome", start + 3 * day)
    completion(store, "chatcmpl-e", "Hi", "Hello", start + 4 * day)
    store.record_feedback("chatcmpl-a", 1)
    store.record_feedback("chatcmpl-b", 1)
    store.record_feedback("chatcmpl-c", -1, "4")
    store.record_feedback("chatcmpl-d", 1)
    store.record_feedback("chatcmpl-d", -1)  # changed their mind: the latest verdict counts
    with store.span("invoke_agent calc") as root:
        with store.span("execute_tool calculator", {"gen_ai.tool.name": "calculator"}):
            pass
        with store.span("chat m", {"gen_ai.input.messages": json.dumps([{"role": "user", "content": "6*7?"}]),
                                   "gen_ai.output.messages": json.dumps([{"role": "assistant", "content": "42"}])}):
            pass
    store.record_feedback(root.trace_id, 1)
    return store


def test_each_format_holds_what_it_should_in_the_format_its_stage_reads(store, tmp_path):
    assert export_traces(store, "sft", tmp_path / "sft.jsonl") == 3  # a and b are one line
    conversations = [r["messages"] for r in load_sft_jsonl(tmp_path / "sft.jsonl")]
    assert conversations == [
        [{"role": "user", "content": "Mail bob@example.com"}, {"role": "assistant", "content": "Done, bob@example.com"}],
        [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],  # the correction
        [{"role": "user", "content": "6*7?"}, {"role": "assistant", "content": "42"}]]  # the agent's last chat call

    assert export_traces(store, "dpo", tmp_path / "dpo.jsonl") == 1
    (pair,) = load_preferences_jsonl(tmp_path / "dpo.jsonl")
    assert (pair["prompt"], pair["chosen"], pair["rejected"]) == ([{"role": "user", "content": "2+2?"}], "4", "5")

    export_traces(store, "kto", tmp_path / "kto.jsonl")
    kto = [(r["prompt"][-1]["content"], r["completion"]["content"], r["label"]) for r in read_jsonl(tmp_path / "kto.jsonl")]
    assert kto == [("Mail bob@example.com", "Done, bob@example.com", True), ("2+2?", "5", False), ("2+2?", "4", True),
                   ("Capital of France?", "Rome", False), ("6*7?", "42", True)]
    assert all(r["completion"]["role"] == "assistant" for r in read_jsonl(tmp_path / "kto.jsonl"))


def test_filters_by_time_app_tool_and_feedback(store):
    def answers(**selection):
        return [r["completion"]["content"] for r in export_records(store, "kto", Selection(**selection))]

    assert answers(since=parse_time("2026-01-03"), until=parse_time("2026-01-04T12:00")) == ["5", "4", "Rome"]
    assert answers(app="serve") == ["Done, bob@example.com", "5", "4", "Rome"]
    assert answers(app="invoke_agent") == answers(tool="calculator") == ["42"]
    assert answers(tool="search") == []
    assert answers(feedback="bad") == ["5", "4", "Rome"] and answers(feedback="corrected") == ["5", "4"]
    assert answers(feedback="good") == ["Done, bob@example.com", "42"] and answers(feedback="unrated") == []
    with pytest.raises(ConfigError, match="feedback filter"):
        Selection(feedback="thumbs")
    with pytest.raises(ConfigError, match="ISO format"):
        parse_time("last tuesday")


def test_redaction_hooks_reach_every_text(store):
    records = export_records(store, "sft", redact=["email", r"\b4\b", lambda text: text.replace("6*7", "[SUM]")])
    texts = json.dumps(records)
    assert "bob@example.com" not in texts and "[SUM]" in texts
    assert records[0]["messages"][1]["content"] == "Done, [REDACTED]"
    assert records[1]["messages"][1]["content"] == "[REDACTED]"
    assert redactor(["phone", "ipv4"])("call +1 (555) 123-4567 from 10.0.0.1") == "call [REDACTED] from [REDACTED]"
    with pytest.raises(ConfigError, match="not a valid regex"):
        redactor(["(unclosed"])


def test_classifications_become_distillation_labels(tmp_path):
    store = tracing.Tracer(tmp_path / "traces.sqlite")
    labels = ["spam", "ham"]
    for text, label in [("WIN A PHONE", "spam"), ("lunch at 1?", "ham"), ("WIN A PHONE", "spam"), ("cheap pills", "ham")]:
        with store.span("classify", {"groklm.operation": "classify", "gen_ai.request.model": "teacher",
                                     "groklm.labels": labels, "groklm.classify.text": text,
                                     "groklm.classify.instructions": None}) as s:
            s.update({"groklm.label": label, "groklm.confidence": 0.9})
        last = s.trace_id
    store.record_feedback(last, -1, "spam")  # a person corrected the last label
    records = export_records(store, "classify")
    assert [(r["text"], r["label"], r["confidence"]) for r in records] == [
        ("WIN A PHONE", "spam", 0.9), ("lunch at 1?", "ham", 0.9), ("cheap pills", "spam", 1.0)]
    assert all(r["teacher"] == "teacher" and r["labels"] == labels for r in records)


def test_an_empty_selection_says_so_and_writes_nothing(store, tmp_path):
    out = tmp_path / "none.jsonl"
    with pytest.raises(DataError, match=r"no sft records .*\(feedback=unrated\)"):
        export_traces(store, "sft", out, Selection(feedback="unrated"))
    with pytest.raises(DataError, match="no classify records"):
        export_traces(store, "classify", out)
    assert not out.exists()
    with pytest.raises(ConfigError, match="format must be one of"):
        export_records(store, "csv")


def test_the_traces_command_family(store, tmp_path, capsys):
    # The CLI spells the choices out (importing the exporter would slow `groklm --help`): they must agree.
    assert cli_apps.TRACE_FORMATS == FORMATS and cli_apps.TRACE_FEEDBACK_FILTERS == FEEDBACK_FILTERS
    db = str(store.path)
    out = tmp_path / "dpo.jsonl"
    main(["traces", "export", "--db", db, "--format", "dpo", "--out", str(out), "--since", "2026-01-02"])
    assert "wrote 1 dpo records" in capsys.readouterr().out and len(read_jsonl(out)) == 1
    with pytest.raises(SystemExit):
        main(["traces", "export", "--db", db, "--format", "sft", "--out", str(tmp_path / "x.jsonl"),
              "--until", "2025-01-01"])
    assert "no sft records" in capsys.readouterr().err
    main(["traces", "--db", db, "--last", "3"])
    assert "invoke_agent calc" in capsys.readouterr().out
    main(["traces", "show", store.find_trace("chatcmpl-d"), "--db", db])
    shown = capsys.readouterr().out
    assert "chatcmpl-d" in shown and shown.count("feedback ") == 2 and shown.index("+1 (good)") < shown.index("-1 (bad)")


def test_a_validated_extraction_is_an_accepted_answer_to_its_first_prompt(tmp_path):
    store = tracing.Tracer(tmp_path / "traces.sqlite")
    asked = [{"role": "user", "content": "Ann is 31."}]

    def chat(messages: list[dict], reply: str):
        attributes = {"gen_ai.input.messages": tracing.messages_attribute(messages),
                      "gen_ai.output.messages": json.dumps([{"role": "assistant", "content": reply}])}
        with store.span("chat m", attributes):
            pass

    def extraction(messages: list[dict], fails: bool = False) -> str:
        with store.span("extract Person", {"groklm.operation": "extract"}) as root:
            with store.span("attempt 1"):
                chat(messages, '{"name": "Ann"}')  # missing age: re-asked
            with store.span("attempt 2"):
                chat([*messages, {"role": "assistant", "content": '{"name": "Ann"}'},
                      {"role": "user", "content": "age: field required"}], '{"name": "Ann", "age": 31}')
            if fails:  # as extract() marks a run out of retries
                root.fail(ValueError("no valid Person"))
        return root.trace_id

    extraction(asked)
    extraction([{"role": "user", "content": "x" * (tracing.MAX_TEXT + 10)}])  # clipped: not what was said
    extraction([{"role": "user", "content": "Bob is 40."}], fails=True)
    rejected = extraction([{"role": "user", "content": "Cy is 2."}])
    store.record_feedback(rejected, -1)
    records = export_records(store, "sft")
    assert records == [{"messages": [*asked, {"role": "assistant", "content": '{"name": "Ann", "age": 31}'}]}]


def test_exported_classifications_are_the_label_cache_distill_reads(tmp_path):
    """An app's classify() calls, one corrected by a user, exported: distill's teacher_labels finds
    every text in the file and asks the teacher nothing, and the correction is the label."""
    from groklm.apps.distill import teacher_labels
    from groklm.apps.structured import classify

    from helpers.backends import Scripted

    class Scorer(Scripted):
        def score(self, messages, replies):
            self.sent.append(messages)
            return [-0.1, -2.0]  # always "spam"

    teacher = Scorer([], frozenset({"score"}), model="runs/teacher")
    store = tracing.set_trace_path(tmp_path / "traces.sqlite")
    try:
        for text in ("WIN A PHONE", "lunch at 1?"):
            with tracing.span("inbox") as root:
                classify(teacher, text, ["spam", "ham"], instructions="Spam or ham?")
        tracing.record_feedback(root.trace_id, -1, "ham")  # the user corrects the second one
    finally:
        tracing.set_trace_path(None)
    out = tmp_path / "labels.jsonl"
    assert export_traces(store, "classify", out) == 2
    asked_before = len(teacher.sent)
    answers = teacher_labels(teacher, teacher.name, ["WIN A PHONE", "lunch at 1?"], ["spam", "ham"], out,
                             "Spam or ham?", progress=False)
    assert len(teacher.sent) == asked_before  # nothing asked again
    assert {t: a["label"] for t, a in answers.items()} == {"WIN A PHONE": "spam", "lunch at 1?": "ham"}
