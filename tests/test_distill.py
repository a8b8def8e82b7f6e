"""groklm distill end to end: a real teacher (a tiny GPT fine-tuned on the spam task, asked through
the local backend) labels emails, a small encoder learns its labels, the saved student loads and
agrees with the teacher on held-out emails; bad input fails with a clear GroklmError."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from groklm.apps.distill import LABELS_FILE, Student, distill
from groklm.apps.structured import classify
from groklm.cli.main import main
from groklm.errors import CheckpointError, ConfigError, DataError
from groklm.tasks import TASKS

from helpers.apps import spam_run

pytestmark = pytest.mark.usefixtures("traces")  # every apps test records its spans in its own file

LABELS = ["spam", "not spam"]
ASK = "Classify this email as spam or not spam."
TINY = {"n_layer": "1", "n_head": "2", "n_embd": "32", "mlp_hidden": "64", "dropout": "0", "lr": "3e-3",
        "min_lr": "3e-4", "device": "cpu"}


def write_emails(path: Path, n: int) -> Path:
    """n distinct held-out emails of the synthetic spam task as {"text": ...} lines (the teacher never saw them)."""
    emails = [r["prompt"][-1]["content"].split("\n", 1)[1] for r in TASKS["spam"].rl_prompts(3 * n, "test", 0)]
    emails = list(dict.fromkeys(emails))[:n]
    assert len(emails) == n
    path.write_text("".join(json.dumps({"text": e}) + "\n" for e in emails))
    return path


@pytest.fixture(scope="module")
def teacher() -> str:
    return f"local:{spam_run()}"


def test_student_learns_the_teachers_labels(tmp_path, teacher, monkeypatch):
    data = write_emails(tmp_path / "emails.jsonl", 100)
    out = tmp_path / "student"
    report = distill(teacher, data, LABELS, out, student="scratch", epochs=8, instructions=ASK, overrides=TINY,
                     progress=False)

    # Every text was asked once; the cache holds the teacher's own answers.
    cached = [json.loads(line) for line in (out / LABELS_FILE).read_text().splitlines()]
    assert len(cached) == 100 and {c["label"] for c in cached} == set(LABELS)
    assert report["held_out"] == 20 and report["train_texts"] == 80
    teacher_said = {c["text"]: c["label"] for c in cached}
    assert sum(c["teacher"] for c in report["per_label"].values()) == 20

    # Well above what answering the teacher's commoner label every time would score.
    assert report["agreement"] >= 0.85 > report["majority_baseline"]
    assert report["teacher_items_per_s"] > 0 and report["student_items_per_s"] > 0
    assert not (out / "checkpoint").exists()
    for name in ("config.json", "model.safetensors", "tokenizer/tokenizer.json", "metrics.jsonl", "loss.png",
                 "report.json", "report.md"):
        assert (out / name).is_file(), name
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["val_accuracy"] > 0.8 and metrics[-1]["loss"] < metrics[0]["loss"]

    # The saved student, loaded again, gives the labels the report counted.
    student = Student.load(out)
    texts = list(teacher_said)
    labels, probs = student.predict(texts)
    assert probs.shape == (100, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert labels == [LABELS[i] for i in probs.argmax(1)]
    assert np.mean([a == teacher_said[t] for a, t in zip(labels, texts)]) >= 0.85

    # A rerun takes the labels from the cache: the teacher is only asked to time it again.
    from groklm.apps import distill as distill_module

    asked = []
    monkeypatch.setattr(distill_module, "classify", lambda backend, text, *args: asked.append(text) or classify(backend, text, *args))
    again = distill(teacher, data, LABELS, tmp_path / "again", student="scratch", epochs=1, instructions=ASK,
                    labels_cache=out / LABELS_FILE, overrides=TINY, progress=False)
    assert (out / LABELS_FILE).read_text().count("\n") == 100
    assert again["timed_texts"] == 20 and 0 < len(asked) <= 21 and set(asked) <= set(teacher_said)


def test_cli_reports_and_rejects_bad_input(tmp_path, teacher, capsys):
    data = write_emails(tmp_path / "emails.jsonl", 30)
    settings = [f"{k}={v}" for k, v in TINY.items()]
    main(["distill", "--teacher", teacher, "--data", str(data), "--labels", "spam, not spam", "--out",
          str(tmp_path / "s"), "--student", "scratch", "--epochs", "1", "--no-progress", "--instructions", ASK,
          "--set", *settings])
    assert "agreement with the teacher" in capsys.readouterr().out
    assert json.loads((tmp_path / "s" / "report.json").read_text())["held_out"] == 6

    def fails(*args: str) -> str:
        with pytest.raises(SystemExit) as exit_info:
            main(["distill", "--out", str(tmp_path / "bad"), "--student", "scratch", "--no-progress", *args])
        assert exit_info.value.code == 1
        return capsys.readouterr().err

    (tmp_path / "empty.txt").write_text("\n\n")
    assert "0 distinct text(s)" in fails("--teacher", teacher, "--data", str(tmp_path / "empty.txt"), "--labels", "a,b")
    assert "at least two" in fails("--teacher", teacher, "--data", str(data), "--labels", "spam")
    assert "distinct" in fails("--teacher", teacher, "--data", str(data), "--labels", "spam,spam")
    assert "unknown backend" in fails("--teacher", "nope:x", "--data", str(data), "--labels", "a,b")
    assert "does not exist" in fails("--teacher", teacher, "--data", str(tmp_path / "none.jsonl"), "--labels", "a,b")
    assert "unknown config key" in fails("--teacher", teacher, "--data", str(data), "--labels", "a,b", "--set", "nope=1")


def test_bad_files_and_caches(tmp_path, teacher):
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "fine"}\n{"txt": "no text key"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl, line 2: expected an object with a non-empty \"text\""):
        distill(teacher, bad_json, LABELS, tmp_path / "o", progress=False)
    data = write_emails(tmp_path / "emails.jsonl", 10)
    with pytest.raises(ConfigError, match="held-out"):
        distill(teacher, data, LABELS, tmp_path / "o", held_out=1.0, progress=False)
    with pytest.raises(ConfigError, match="scratch only"):
        distill(teacher, data, LABELS, tmp_path / "o", overrides={"n_layer": "1"}, progress=False)
    # A cache whose answer is not one of the labels asked for is refused, not silently trusted.
    text = json.loads(data.read_text().splitlines()[0])["text"]
    cache = tmp_path / "cache.jsonl"
    cache.write_text(json.dumps({"teacher": teacher, "labels": LABELS, "instructions": None, "text": text,
                                 "label": "ham", "confidence": None, "seconds": 0.1}) + "\n")
    with pytest.raises(DataError, match="'ham' is not one of"):
        distill(teacher, data, LABELS, tmp_path / "o", student="scratch", labels_cache=cache, overrides=TINY,
                progress=False)
    with pytest.raises(CheckpointError, match="not a distilled student"):
        Student.load(spam_run())


@pytest.mark.slow
def test_minilm_student(tmp_path, teacher):
    data = write_emails(tmp_path / "emails.jsonl", 60)
    report = distill(teacher, data, LABELS, tmp_path / "m", epochs=2, instructions=ASK, overrides={"device": "cpu"},
                     progress=False)
    assert report["agreement"] >= 0.9 and report["student_params"] > 20_000_000
