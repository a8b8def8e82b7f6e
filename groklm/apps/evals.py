"""Evals: run a dataset through an application, score every output, compare variants.

A dataset is a JSONL file (or a list of dicts), one case per line, e.g.

    {"input": "Congratulations! You won a car. Click bit.ly/free", "expected": "spam"}

A target turns a case into an output: any Python function `fn(case) -> str`, or a
`Prompt(backend, "Is this spam? {input}")` whose template is filled from the case's fields.
Checks score an output in [0, 1]:

    exact(field)       1 if output == case[field] (surrounding whitespace ignored)
    contains(field)    1 if case[field] occurs in the output
    schema(model)      1 if the output is JSON that validates (a Pydantic model or type, or a
                       JSON-schema dict, which needs the `jsonschema` package)
    python(fn)         your own: fn(output, case) -> bool or float
    judge(backend, rubric)   an LLM judge: classify(backend, ..., ["pass", "fail"]); the score
                       is P(pass) where the judge backend can score labels, else 1 or 0

    report = compare(cases, {"base": Prompt(b1, T), "tuned": Prompt(b2, T)}, [exact(), judge(b3, "...")])
    write_report(report, "evals/")     # report.json + report.md: means, wins/losses, each case side by side

A target that raises on a case does not stop the run: the case scores 0 and keeps the error.
Every case is a span (groklm.apps.tracing), with its backend calls nested under it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from tqdm import tqdm

from groklm.apps.backends import Backend, Usage
from groklm.apps.structured import classify
from groklm.apps.tracing import span
from groklm.errors import ConfigError, DataError
from groklm.jsonl import read_jsonl
from groklm.rundir import atomic_path, write_json


def load_cases(source: str | Path | Sequence[dict]) -> list[dict]:
    """Cases from a JSONL file (one JSON object per line; blank lines skipped) or a list."""
    if not isinstance(source, (str, Path)):
        cases = list(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"dataset {path} does not exist")
        cases = read_jsonl(path, allow_empty=True)
    if not cases:
        raise DataError("the dataset has no cases")
    bad = next((i for i, c in enumerate(cases) if not isinstance(c, dict)), None)
    if bad is not None:
        raise DataError(f"case {bad + 1} is a {type(cases[bad]).__name__}; every case must be a JSON object")
    return cases


# ---- targets ------------------------------------------------------------------------------------


@dataclass
class Prompt:
    """A backend and a prompt template: "{input}" and any other case field are filled in."""

    backend: Backend
    template: str = "{input}"
    system: str | None = None
    options: dict = field(default_factory=dict)  # for backend.chat: max_tokens, temperature, ...

    def messages(self, case: dict) -> list[dict]:
        try:
            text = self.template.format(**case)
        except KeyError as error:
            raise DataError(f"the prompt template uses {{{error.args[0]}}}, which this case lacks") from None
        return ([{"role": "system", "content": self.system}] if self.system else []) + [{"role": "user", "content": text}]

    def __call__(self, case: dict) -> tuple[str, Usage]:
        reply = self.backend.chat(self.messages(case), **self.options)
        return reply.text, reply.usage

    @property
    def label(self) -> str:
        return f"{self.backend.model}: {self.template}"


Target = Callable[[dict], Any]


# ---- checks -------------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    score: Callable[[str, dict], float]  # (output, case) -> [0, 1]


def _expected(case: dict, key: str) -> str:
    if key not in case:
        raise DataError(f"the case has no {key!r} field to check against")
    value = case[key]
    return value if isinstance(value, str) else json.dumps(value)


def exact(key: str = "expected") -> Check:
    return Check("exact", lambda output, case: float(output.strip() == _expected(case, key).strip()))


def contains(key: str = "expected") -> Check:
    return Check("contains", lambda output, case: float(_expected(case, key).strip() in output))


def schema(model: Any, name: str = "schema") -> Check:
    """Valid JSON for a Pydantic model/type, or for a JSON schema given as a dict."""
    if isinstance(model, dict):
        try:
            import jsonschema
        except ImportError:
            raise ConfigError("checking against a JSON-schema dict needs the jsonschema package "
                              "(pip install jsonschema), or pass a Pydantic model instead") from None
        validator = jsonschema.Draft202012Validator(model)

        def valid(output: str, case: dict) -> float:
            try:
                return float(validator.is_valid(json.loads(output)))
            except json.JSONDecodeError:
                return 0.0
    else:
        adapter = TypeAdapter(model)

        def valid(output: str, case: dict) -> float:
            try:
                adapter.validate_json(output)
                return 1.0
            except ValidationError:
                return 0.0
    return Check(name, valid)


def python(function: Callable[[str, dict], Any], name: str | None = None) -> Check:
    """Your own check: function(output, case) -> bool or a float in [0, 1]."""
    return Check(name or getattr(function, "__name__", "python"), lambda output, case: float(function(output, case)))


JUDGE_RUBRIC = "Is the answer correct and responsive to the question? Answer pass or fail."


def judge(backend: Backend, rubric: str = JUDGE_RUBRIC, name: str = "judge") -> Check:
    """An LLM judge: the score is its probability of "pass" (or 1/0 without logprobs)."""
    def score(output: str, case: dict) -> float:
        parts = [f"Question: {case.get('input', '')}"]
        if "expected" in case:
            parts.append(f"Reference answer: {_expected(case, 'expected')}")
        parts.append(f"Answer: {output}")
        verdict = classify(backend, "\n".join(parts), ["pass", "fail"], instructions=rubric)
        if verdict.scores is not None:
            return verdict.scores["pass"]
        return float(verdict.label == "pass")

    return Check(name, score)


# ---- running --------------------------------------------------------------------------------------


def run_target(target: Target, case: dict) -> tuple[str, Usage]:
    """(output text, usage): a Prompt reports usage; a plain function's output is its return value."""
    result = target(case)
    if isinstance(target, Prompt):
        return result
    return (result if isinstance(result, str) else json.dumps(result, default=str)), Usage()


def evaluate(cases: str | Path | Sequence[dict], target: Target, checks: Sequence[Check], name: str = "target",
             progress: bool = False) -> dict:
    """Every case through `target`, scored by every check: {"name", "rows", "summary"}."""
    cases = load_cases(cases)
    if not checks:
        raise ConfigError("give at least one check (exact, contains, schema, python, judge)")
    rows = []
    with span(f"evals {name}", {"groklm.operation": "evals", "groklm.cases": len(cases)}):
        for number, case in enumerate(tqdm(cases, disable=not progress, unit="case", desc=name), start=1):
            with span(f"case {number}", {"groklm.case": number}) as s:
                start = time.perf_counter()
                row: dict = {"case": number, "input": case.get("input"), "expected": case.get("expected"),
                             "output": None, "error": None, "scores": {}}
                try:
                    row["output"], usage = run_target(target, case)
                except Exception as error:  # noqa: BLE001 (one failing case must not end the run)
                    row["error"], usage = f"{type(error).__name__}: {error}", Usage()
                row["latency_s"] = round(time.perf_counter() - start, 4)
                row["usage"] = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}
                for check in checks:
                    row["scores"][check.name] = 0.0 if row["error"] else check.score(row["output"], case)
                s.update({f"groklm.score.{k}": v for k, v in row["scores"].items()})
            rows.append(row)
    summary = {c.name: sum(r["scores"][c.name] for r in rows) / len(rows) for c in checks}
    summary["errors"] = sum(r["error"] is not None for r in rows)
    summary["mean_latency_s"] = sum(r["latency_s"] for r in rows) / len(rows)
    summary["output_tokens"] = sum(r["usage"]["output_tokens"] for r in rows)
    label = target.label if isinstance(target, Prompt) else getattr(target, "__name__", name)
    return {"name": name, "target": label, "cases": len(rows), "summary": summary, "rows": rows}


def compare(cases: str | Path | Sequence[dict], targets: dict[str, Target], checks: Sequence[Check],
            progress: bool = False) -> dict:
    """Evaluate each target on the same cases; with two, count per check which one scored higher."""
    if not targets:
        raise ConfigError("compare needs at least one target")
    cases = load_cases(cases)
    runs = [evaluate(cases, target, checks, name, progress) for name, target in targets.items()]
    report: dict = {"checks": [c.name for c in checks], "runs": runs}
    if len(runs) == 2:
        a, b = runs
        report["head_to_head"] = {
            check.name: {
                f"{a['name']} better": sum(x["scores"][check.name] > y["scores"][check.name] for x, y in zip(a["rows"], b["rows"])),
                f"{b['name']} better": sum(x["scores"][check.name] < y["scores"][check.name] for x, y in zip(a["rows"], b["rows"])),
                "ties": sum(x["scores"][check.name] == y["scores"][check.name] for x, y in zip(a["rows"], b["rows"])),
            }
            for check in checks
        }
    return report


# ---- the report ------------------------------------------------------------------------------------


def _cell(value: Any, limit: int = 60) -> str:
    text = "" if value is None else value if isinstance(value, str) else json.dumps(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def to_markdown(report: dict) -> str:
    runs, checks = report["runs"], report["checks"]
    lines = ["# Evals", "", f"{runs[0]['cases']} cases; checks: {', '.join(checks)}.", "",
             "| variant | target | " + " | ".join(checks) + " | errors | mean latency | output tokens |",
             "| --- | --- | " + " | ".join("---" for _ in checks) + " | --- | --- | --- |"]
    for run in runs:
        s = run["summary"]
        lines.append(f"| {run['name']} | {_cell(run['target'], 50)} | " + " | ".join(f"{s[c]:.3f}" for c in checks)
                     + f" | {s['errors']} | {s['mean_latency_s']:.2f} s | {s['output_tokens']} |")
    if "head_to_head" in report:
        lines += ["", "## Head to head", "", "| check | " + " | ".join(next(iter(report["head_to_head"].values()))) + " |",
                  "| --- |" + " --- |" * 3]
        for check, counts in report["head_to_head"].items():
            lines.append(f"| {check} | " + " | ".join(str(v) for v in counts.values()) + " |")
    lines += ["", "## Cases", "", "| # | input | expected | " + " | ".join(f"{r['name']} output | score" for r in runs) + " |",
              "| --- | --- | --- | " + " | ".join("--- | ---" for _ in runs) + " |"]
    for i, first in enumerate(runs[0]["rows"]):
        cells = []
        for run in runs:
            row = run["rows"][i]
            output = f"ERROR {row['error']}" if row["error"] else row["output"]
            cells.append(f"{_cell(output)} | " + ", ".join(f"{v:.2f}" for v in row["scores"].values()))
        lines.append(f"| {first['case']} | {_cell(first['input'])} | {_cell(first['expected'], 30)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(report: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """OUT/report.json and OUT/report.md (written atomically)."""
    out_dir = Path(out_dir)
    write_json(out_dir / "report.json", report)
    with atomic_path(out_dir / "report.md") as tmp:
        tmp.write_text(to_markdown(report), encoding="utf-8")
    return out_dir / "report.json", out_dir / "report.md"
