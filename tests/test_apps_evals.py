"""Evals: datasets through functions and prompts, every check, side-by-side reports, the CLI."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from groklm.apps import evals
from groklm.apps.backends import LocalBackend
from groklm.apps.structured import classify
from groklm.cli.main import main
from groklm.errors import DataError

from helpers.apps import spam_questions, spam_run

pytestmark = pytest.mark.usefixtures("traces")  # every apps test records its spans in its own file

INSTRUCTION = "Is this email spam? Answer spam or not spam.\n{input}"


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def spam_cases():
    return [{"input": email, "expected": answer} for _, email, answer in spam_questions(8)]


class Pair(BaseModel):
    a: int
    b: str


def test_checks_score_a_function_target():
    cases = [{"input": "1", "expected": "one"}, {"input": "2", "expected": "two"}, {"input": "3", "expected": "three"},
             {"input": "boom", "expected": "x"}]

    def target(case):
        if case["input"] == "boom":
            raise RuntimeError("the app crashed")
        return {"1": "one", "2": "Two, I think", "3": '{"a": 3, "b": "three"}'}[case["input"]]

    checks = [evals.exact(), evals.contains(), evals.schema(Pair), evals.schema(Pair.model_json_schema(), name="json schema"),
              evals.python(lambda output, case: len(output) < 10, name="short")]
    run = evals.evaluate(cases, target, checks, name="fn")
    scores = [r["scores"] for r in run["rows"]]
    assert [s["exact"] for s in scores] == [1.0, 0.0, 0.0, 0.0]
    assert [s["contains"] for s in scores] == [1.0, 0.0, 1.0, 0.0]  # "two" is not in "Two, I think": case matters
    assert [s["schema"] for s in scores] == [s["json schema"] for s in scores] == [0.0, 0.0, 1.0, 0.0]
    assert [s["short"] for s in scores] == [1.0, 0.0, 0.0, 0.0]
    assert run["rows"][3]["error"] == "RuntimeError: the app crashed" and run["summary"]["errors"] == 1
    assert run["summary"]["exact"] == 0.25 and run["cases"] == 4


def test_json_schema_dicts_and_bad_datasets(tmp_path):
    check = evals.schema({"type": "object", "properties": {"a": {"type": "integer", "maximum": 5}}, "required": ["a"]})
    assert [check.score(o, {}) for o in ['{"a": 5}', '{"a": 6}', "{}", "not json"]] == [1.0, 0.0, 0.0, 0.0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "x"}\n{oops\n')
    with pytest.raises(DataError, match="line 2"):
        evals.load_cases(bad)
    with pytest.raises(DataError, match="does not exist"):
        evals.load_cases(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="every case must be a JSON object"):
        evals.load_cases([{"input": "x"}, [1]])
    with pytest.raises(DataError, match="no cases"):
        evals.load_cases([])
    with pytest.raises(DataError, match="uses {question}"):
        evals.Prompt(None, "{question}").messages({"input": "x"})


def test_compare_two_prompts_on_a_trained_model(spam_cases, tmp_path):
    backend = LocalBackend(spam_run())
    targets = {"instructed": evals.Prompt(backend, INSTRUCTION, options={"max_tokens": 8}),
               "bare": evals.Prompt(backend, "{input}", options={"max_tokens": 8})}
    report = evals.compare(spam_cases, targets, [evals.exact(), evals.contains()])
    instructed, bare = report["runs"]
    for run in report["runs"]:
        for row, case in zip(run["rows"], spam_cases):
            assert row["scores"]["exact"] == float(row["output"].strip() == case["expected"])
            assert row["usage"]["input_tokens"] > 0
    assert instructed["summary"]["exact"] >= 0.75  # the format the model learned
    counts = report["head_to_head"]["exact"]
    assert sum(counts.values()) == len(spam_cases)
    assert counts["instructed better"] - counts["bare better"] == round(
        (instructed["summary"]["exact"] - bare["summary"]["exact"]) * len(spam_cases))
    json_path, md_path = evals.write_report(report, tmp_path / "out")
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(report))
    markdown = md_path.read_text()
    assert "| instructed |" in markdown and "## Head to head" in markdown and markdown.count("\n| ") >= 2 + len(spam_cases)


def test_llm_judge_scores_with_the_judges_probability(spam_cases):
    judge_backend = LocalBackend(spam_run())
    rubric = "Is this email spam? Answer spam or not spam."
    check = evals.judge(judge_backend, rubric=rubric)
    case = spam_cases[0]
    score = check.score("spam", case)
    verdict = classify(judge_backend, f"Question: {case['input']}\nReference answer: {case['expected']}\nAnswer: spam",
                       ["pass", "fail"], instructions=rubric)
    assert 0.0 <= score <= 1.0 and score == pytest.approx(verdict.scores["pass"])


def test_evals_command_writes_the_report(tmp_path, spam_cases, capsys):
    data = write_jsonl(tmp_path / "cases.jsonl", spam_cases[:4])
    main(["evals", data, "--backend", f"local:{spam_run()}", "--prompt", INSTRUCTION.replace("\n", "\\n"),
              "--prompt", "{input}", "--check", "exact", "--check", "contains", "--out", str(tmp_path / "out"),
              "--max-tokens", "8", "--no-progress"])
    out = capsys.readouterr().out
    assert "| 1:prompt |" in out and "| 2:prompt |" in out and "Head to head" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["checks"] == ["exact", "contains"] and [r["cases"] for r in report["runs"]] == [4, 4]
    assert report["runs"][0]["target"].endswith(INSTRUCTION)
    with pytest.raises(SystemExit):
        main(["evals", data, "--backend", f"local:{spam_run()}", "--check", "fuzzy"])
    assert "unknown check" in capsys.readouterr().err
