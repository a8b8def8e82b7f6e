"""Distillation: a big model labels the data once, then a small encoder learns to do that one job.

The essay's advice for a step of an LLM application that has become one narrow job ("is this
email spam?"): start with the big model, collect its outputs, then train a small model on
them. The small one is far cheaper and faster and runs anywhere; the price is that it does
only this job, and at best as well as it copies its teacher.

    texts ─► teacher backend, classify() ─► labels            (cached: asked once per text)
    texts ─► WordPiece ─► Encoder ─► mean pooling ─► Linear(n_embd, n_labels) ─► logits
                                  cross-entropy against the teacher's labels

The student starts from all-MiniLM-L6-v2 (`minilm`: it already knows what sentences mean, so a
few hundred labels go a long way) or from random weights (`scratch`: a small encoder that
knows only the labelled texts; it still uses MiniLM's WordPiece vocabulary). A share of the
texts is held out: the student's agreement with the teacher there is its accuracy, in the only
sense available without human labels. The report also times both on the same held-out texts.

    groklm distill --teacher local:runs/chat --data emails.jsonl --labels "spam,not spam" --out runs/spam-student
    labels, probs = Student.load("runs/spam-student").predict(["Win a free phone!"])
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from groklm.apps.backends import load_backend
from groklm.apps.rag.embed import default_model_dir, mean_pool, pad
from groklm.apps.structured import classify
from groklm.errors import CheckpointError, ConfigError, DataError
from groklm.jsonl import appending_jsonl, read_jsonl
from groklm.model.encoder import Encoder, EncoderConfig
from groklm.model.weights import load_weights
from groklm.rundir import CHECKPOINT_DIR, WEIGHTS_FILE, RunDir, read_config, write_json
from groklm.tokenizer.wordpiece import WordPieceTokenizer
from groklm.train.config import TrainConfig, split_overrides
from groklm.train.stage import Place, run_stage, seed_everything

STAGE = "distill"
ARCH = "encoder-classifier"
LABELS_FILE = "teacher_labels.jsonl"
TOKENIZER_FILE = "tokenizer/tokenizer.json"
STUDENTS = ("minilm", "scratch")
TIMED = 64  # held-out texts timed on both models: a steady rate, yet few extra calls to a paid API
# A pretrained encoder is fine-tuned gently, or it forgets what it knew; a random one needs a
# big learning rate to get anywhere in a few epochs.
TRAIN_DEFAULTS = {
    "minilm": {"batch_size": 16, "lr": 1e-4, "min_lr": 1e-5, "weight_decay": 0.01},
    "scratch": {"batch_size": 16, "lr": 1e-3, "min_lr": 1e-4, "weight_decay": 0.01},
}
SCRATCH_MODEL = {"n_layer": 2, "n_head": 4, "n_embd": 128, "mlp_hidden": 512, "dropout": 0.1}


# ---- inputs ---------------------------------------------------------------------------------


def read_texts(path: str | Path) -> list[str]:
    """The texts of a .jsonl file ({"text": ...} per line) or of any other file (one per line),
    without blank lines and repeats (a repeated text would land on both sides of the split)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        lines = read_jsonl(path, _text_of, allow_empty=True)
    elif not path.is_file():
        raise DataError(f"{path} does not exist")
    else:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as error:
            raise DataError(f"{path} is not UTF-8 text: {error}") from error
    texts = list(dict.fromkeys(line.strip() for line in lines if line.strip()))
    if len(texts) < 2:
        raise DataError(f"{path} has {len(texts)} distinct text(s); distilling needs at least 2 (to train on and to hold out)")
    return texts


def _text_of(record: object) -> str:
    if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not record["text"].strip():
        raise DataError('expected an object with a non-empty "text" string')
    return record["text"]


def parse_labels(labels: str | Sequence[str]) -> list[str]:
    """'spam,not spam' or a list -> a list of at least two distinct, non-empty labels."""
    names = [name.strip() for name in (labels.split(",") if isinstance(labels, str) else labels)]
    if len(names) < 2 or not all(names):
        raise ConfigError(f"--labels needs at least two non-empty labels separated by commas, got {labels!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--labels must be distinct, got {names}")
    return names


def split(texts: list[str], held_out: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, held-out): a seeded shuffle, then the first `held_out` share is held out."""
    if not 0.0 < held_out < 1.0:
        raise ConfigError(f"--held-out must be a fraction between 0 and 1, got {held_out}")
    shuffled = random.Random(seed).sample(texts, len(texts))
    n_held = min(max(1, round(len(texts) * held_out)), len(texts) - 1)
    return shuffled[n_held:], shuffled[:n_held]


# ---- the teacher ----------------------------------------------------------------------------


def teacher_labels(backend, name: str, texts: list[str], labels: list[str], cache: Path,
                   instructions: str | None = None, progress: bool = True) -> dict[str, dict]:
    """{text: {"label", "confidence", ...}} for every text, from the teacher `backend` (`name`
    says which one it is).

    Answers are appended to `cache` (JSONL) as they come, so an interrupted or repeated run
    asks only for what is missing. A cached answer counts only if it came from the same
    teacher, labels and instructions."""
    asked = {"teacher": name, "labels": labels, "instructions": instructions}
    known = read_cache(cache, asked)
    missing = [text for text in texts if text not in known]
    if missing:
        with appending_jsonl(cache) as append:  # each answer is kept even if the run dies on the next one
            for text in tqdm(missing, desc="teacher labels", unit="text", disable=not progress, dynamic_ncols=True):
                result = classify(backend, text, labels, instructions)
                record = {**asked, "text": text, "label": result.label, "confidence": result.confidence}
                append(record)
                known[text] = record
    return {text: known[text] for text in texts}


def read_cache(cache: Path, asked: dict) -> dict[str, dict]:
    known: dict[str, dict] = {}
    if not cache.is_file():
        return known
    # A line cut short when a run was killed is skipped (with a warning): that text is asked again.
    for record in read_jsonl(cache, skip_bad_lines=True, allow_empty=True):
        if any(record.get(k) != v for k, v in asked.items()):
            continue
        if record.get("label") not in asked["labels"] or not isinstance(record.get("text"), str):
            raise DataError(f"{cache}: label {record.get('label')!r} is not one of {asked['labels']} "
                            f"(cached for the text {record.get('text')!r})")
        known[record["text"]] = record
    return known


# ---- the student ----------------------------------------------------------------------------


def classifier(encoder, n_labels: int):
    """The student's weights as one module (one safetensors file): an encoder and a linear head."""
    return nn.ModuleDict({"encoder": encoder, "head": nn.Linear(encoder.config.n_embd, n_labels)})


def class_logits(net, ids, mask):
    """(B, T) ids and mask -> (B, n_labels): encode, average the real tokens' vectors, project."""
    return net["head"](mean_pool(net["encoder"](ids, attention_mask=mask), mask))


@dataclass
class Student:
    net: Any  # classifier(): encoder + head
    tokenizer: Any  # WordPieceTokenizer
    labels: list[str]
    max_length: int  # tokens per text, [CLS] and [SEP] included; longer texts are cut

    @classmethod
    def load(cls, run: str | Path, device: str = "cpu") -> Student:
        """A student saved by `distill` (config.json, model.safetensors, tokenizer/)."""
        run = Path(run)
        config = read_config(run)
        if config.get("arch") != ARCH:
            raise CheckpointError(f"{run} is not a distilled student (its arch is {config.get('arch')!r}); make one with `groklm distill`")
        net = classifier(Encoder(EncoderConfig(**config["model"])), len(config[STAGE]["labels"]))
        load_weights(net, run / WEIGHTS_FILE)
        tokenizer = WordPieceTokenizer.from_hf_file(run / TOKENIZER_FILE)
        settings = config[STAGE]
        return cls(net.to(device).eval(), tokenizer, settings["labels"], settings["max_length"])

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.tokenizer.encode_for_model(text, self.max_length) for text in texts]

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> tuple[list[str], np.ndarray]:
        """(a label per text, (n, n_labels) probabilities in the order of self.labels)."""
        ids = self.encode(texts)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # similar lengths share a batch: little padding
        probs = np.zeros((len(ids), len(self.labels)), dtype=np.float32)
        device = next(self.net.parameters()).device
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch, mask = pad([ids[i] for i in rows], self.tokenizer.pad_id, device)
                probs[rows] = class_logits(self.net, batch, mask).float().softmax(-1).cpu().numpy()
        return [self.labels[i] for i in probs.argmax(1)], probs


def new_student(kind: str, labels: list[str], max_length: int, model_overrides: dict) -> Student:
    """MiniLM's encoder, or a small random one on MiniLM's vocabulary, with a fresh head."""
    if kind == "minilm":
        if model_overrides:
            raise ConfigError(f"model settings ({', '.join(model_overrides)}) apply to --student scratch only")
        encoder = Encoder.from_hf(default_model_dir())
        tokenizer = encoder.tokenizer
    else:
        tokenizer = WordPieceTokenizer.from_hf_file(default_model_dir() / "tokenizer.json")
        settings = {**SCRATCH_MODEL, "max_positions": max_length, **model_overrides}
        encoder = Encoder(EncoderConfig(vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id, **settings))
    if not 2 < max_length <= encoder.config.max_positions:
        raise ConfigError(f"--max-length must be in 3..{encoder.config.max_positions} for this encoder, got {max_length}")
    return Student(classifier(encoder, len(labels)).train(), tokenizer, labels, max_length)


# ---- training -------------------------------------------------------------------------------


def train_config(kind: str, n_train: int, n_held: int, epochs: float, overrides: dict):
    """The shared loop's TrainConfig: the student's defaults, a schedule of `epochs` passes over
    the training texts with an evaluation on all held-out texts after each, then `overrides`."""
    if not epochs > 0:
        raise ConfigError(f"--epochs must be > 0, got {epochs}")
    batch = overrides.get("batch_size", TRAIN_DEFAULTS[kind]["batch_size"]) * overrides.get("grad_accum", 1)
    per_epoch = math.ceil(n_train / batch)
    steps = max(1, round(epochs * per_epoch))
    schedule = {"max_iters": steps, "warmup_iters": steps // 10, "eval_interval": per_epoch,
                    "eval_iters": math.ceil(n_held / batch), "log_interval": max(1, min(10, per_epoch // 2))}
    return TrainConfig(**{**TRAIN_DEFAULTS[kind], **schedule, **overrides})


def make_batches(ids: list[list[int]], targets: list[int], cfg, pad_id: int):
    """batches(step, micros): the shared loop's batch function. Every epoch visits each training
    text once in its own seeded order; batches are a function of the step, like pretraining's."""
    def order(epoch: int) -> list[int]:
        return random.Random(cfg.seed * 1_000_003 + epoch).sample(range(len(ids)), len(ids))

    def batches(step: int, micros: range):
        for micro in micros:
            first = (step * cfg.grad_accum + micro) * cfg.batch_size
            rows = [order(p // len(ids))[p % len(ids)] for p in range(first, first + cfg.batch_size)]
            batch, mask = pad([ids[r] for r in rows], pad_id, "cpu")
            yield batch, mask, torch.tensor([targets[r] for r in rows])

    return batches


def make_val_batch(ids: list[list[int]], targets: list[int], batch_size: int, pad_id: int):
    def val_batch(i: int):
        rows = range(i * batch_size, min((i + 1) * batch_size, len(ids)))
        batch, mask = pad([ids[r] for r in rows], pad_id, "cpu")
        return batch, mask, torch.tensor([targets[r] for r in rows])

    return val_batch


def classification_loss(net, batch):
    """Cross-entropy against the teacher's labels; accuracy here is agreement with the teacher."""
    ids, mask, targets = batch
    logits = class_logits(net, ids, mask).float()
    return F.cross_entropy(logits, targets), {"accuracy": (logits.argmax(-1) == targets).float().mean()}


def distill(teacher, data: str | Path, labels: str | Sequence[str], out: str | Path, student: str = "minilm",
            held_out: float = 0.2, epochs: float = 3, labels_cache: str | Path | None = None,
            instructions: str | None = None, max_length: int = 128, overrides: dict | None = None,
            progress: bool = True) -> dict:
    """Label `data` with `teacher` (a backend spec or a Backend), train a `student` on the labels,
    compare the two on the held-out texts; writes the run directory `out`, returns the report."""
    if student not in STUDENTS:
        raise ConfigError(f"unknown student {student!r}; students: {', '.join(STUDENTS)}")
    labels, texts, run = parse_labels(labels), read_texts(data), RunDir(out)
    model_overrides, train_overrides = split_overrides(overrides or {}, EncoderConfig)
    train_texts, held_texts = split(texts, held_out, train_overrides.get("seed", TrainConfig.seed))
    cfg = train_config(student, len(train_texts), len(held_texts), epochs, train_overrides)
    seed_everything(cfg.seed)
    s = new_student(student, labels, max_length, model_overrides)  # before the teacher: settings fail fast
    backend = load_backend(teacher)
    name = backend.name
    cache = Path(labels_cache) if labels_cache else run.path / LABELS_FILE
    answers = teacher_labels(backend, name, texts, labels, cache, instructions, progress)

    target = {text: labels.index(answers[text]["label"]) for text in texts}
    train_ids, held_ids = s.encode(train_texts), s.encode(held_texts)
    pad_id = s.tokenizer.pad_id
    config = {"stage": STAGE, "parent": None, "arch": ARCH, "model": asdict(s.net["encoder"].config), "train": cfg.to_dict(),
              "data": {"path": str(data), "texts": len(texts), "train": len(train_texts), "held_out": len(held_texts),
                       "labels_cache": str(cache)},
              STAGE: {"student": student, "labels": labels, "max_length": max_length, "teacher": name,
                      "instructions": instructions}}

    def build(place: Place):
        return place.setup(s.net.to(place.device), make_batches(train_ids, [target[t] for t in train_texts], cfg, pad_id),
                           make_val_batch(held_ids, [target[t] for t in held_texts], cfg.batch_size, pad_id),
                           tokens_per_micro=round(cfg.batch_size * sum(map(len, train_ids)) / len(train_ids)),
                           loss_fn=classification_loss)

    # A fresh run every time, over an earlier one if need be: the labels are cached, and a
    # student is retrained from them in minutes. One process: the teacher was asked text by
    # text, so there is nothing to share out. Both students read MiniLM's vocabulary.
    run_stage(run, config, cfg, build, resume=False, progress=progress, tokenizer=default_model_dir() / "tokenizer.json",
              distributed=False)
    device = next(s.net.parameters()).device
    # There is no resume, so the optimizer state (twice the weights) would only take up disk.
    shutil.rmtree(run.path / CHECKPOINT_DIR, ignore_errors=True)
    s.net.eval()
    report = {"teacher": name, "student": student, "labels": labels, "train_texts": len(train_texts),
              "student_params": sum(p.numel() for p in s.net.parameters()), "student_device": str(device),
              **agreement(s, [answers[t] for t in held_texts]), **speeds(backend, s, held_texts, instructions)}
    write_json(run.path / "report.json", report)
    (run.path / "report.md").write_text(report_markdown(report, run.path))
    return report


# ---- the comparison -------------------------------------------------------------------------


def agreement(s: Student, held: list[dict]) -> dict:
    """How often the student says what the teacher said on the held-out texts, and per label."""
    predicted, _ = s.predict([record["text"] for record in held])
    said = [record["label"] for record in held]
    agreed = [a == b for a, b in zip(said, predicted)]
    per_label = {label: {"teacher": said.count(label), "student": predicted.count(label),
                         "agreed": sum(ok for ok, t in zip(agreed, said) if t == label)} for label in s.labels}
    return {
        "held_out": len(held), "agreement": sum(agreed) / len(held),
        # what always answering the teacher's most frequent label would score: the bar to clear
        "majority_baseline": max(map(said.count, s.labels)) / len(held),
        "per_label": per_label,
    }


def speeds(backend, s: Student, texts: list[str], instructions: str | None) -> dict:
    """Items/s of teacher and student on the same held-out texts, timed back to back so that
    both see the same machine. The teacher answers one classify() call per text, as an
    application asks it; the student is timed that way too, and batched."""
    texts = texts[:TIMED]

    def rate(run) -> float:
        run(texts[:1])  # warm up: first-call allocations and caches are not the steady speed
        start = time.perf_counter()
        run(texts)
        return len(texts) / (time.perf_counter() - start)

    teacher = rate(lambda batch: [classify(backend, text, s.labels, instructions) for text in batch])
    one_by_one = rate(lambda batch: [s.predict([text]) for text in batch])
    batched = rate(s.predict)
    return {"timed_texts": len(texts), "teacher_items_per_s": teacher, "student_items_per_s": batched,
            "student_items_per_s_one_by_one": one_by_one, "speedup": batched / teacher,
            "speedup_one_by_one": one_by_one / teacher}


def report_markdown(report: dict, out: Path) -> str:
    rows = "\n".join(f"| {label} | {c['teacher']} | {c['student']} | {c['agreed']} |" for label, c in report["per_label"].items())
    return f"""# Distilled student: {out.name}

Teacher `{report['teacher']}`, student `{report['student']}` ({report['student_params']:,} parameters), trained
on {report['train_texts']} teacher-labelled texts; compared on {report['held_out']} held-out texts.

| | |
|---|---|
| agreement with the teacher | {report['agreement']:.3f} |
| always the most common label | {report['majority_baseline']:.3f} |
| teacher items/s (one classify() call per text) | {report['teacher_items_per_s']:.1f} |
| student items/s, one text per call ({report['student_device']}) | \
{report['student_items_per_s_one_by_one']:.1f} ({report['speedup_one_by_one']:.1f}x) |
| student items/s, batched ({report['student_device']}) | {report['student_items_per_s']:.1f} ({report['speedup']:.1f}x) |

Speeds were timed back to back on the same {report['timed_texts']} held-out texts.

| label | teacher said | student said | both said |
|---|---|---|---|
{rows}

Loss curves: loss.png (val_accuracy in metrics.jsonl is the agreement after each epoch).
"""
