"""Models for the apps tests, built once per test process and shared by the test_apps_* modules.

    random_run()    a random-init tiny GPT with a small byte-level BPE, context 1024: fast, and
                    under a grammar it can only write valid output, so constraints are testable
    spam_run()      the same shape fine-tuned for a few seconds on the synthetic spam task
                    (the prompt format the speedrun's SFT model learns): it really classifies
    random_hf_dir() random_run exported with `groklm export` (a transformers directory)
    spam_server()   `groklm serve spam_run` on a free loopback port (helpers/servers.py)

Nothing is downloaded; everything lives in one temporary directory removed at exit.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path

import torch

from groklm.interop.hf import export_run
from groklm.tasks import TASKS
from groklm.tokenizer import Tokenizer
from groklm.train.sft import sft

from helpers.runs import tiny_run
from helpers.servers import start_server, stop_server

SPAM_ITERS = 200
JSON_TEXT = '{"name": "Ann", "age": 34, "tags": ["a", "b"], "ok": true, "score": 2.5, "note": null}'


@cache
def workdir() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="groklm-apps-test-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


@cache
def tokenizer() -> Tokenizer:
    """A 300-token byte-level BPE learned from the spam and extract tasks' text and some JSON."""
    records = TASKS["spam"].sft(300, "train", 0) + TASKS["extract"].sft(100, "train", 0)
    corpus = "\n".join(m["content"] for r in records for m in r["messages"]) + "\n" + JSON_TEXT
    return Tokenizer.train(corpus, 300)


@cache
def random_run() -> Path:
    return tiny_run(workdir() / "random", tokenizer(), block_size=1024, n_embd=32)


@cache
def spam_run() -> Path:
    base = tiny_run(workdir() / "spam-base", tokenizer(), block_size=512, n_embd=32)
    settings = {"max_iters": SPAM_ITERS, "batch_size": 4, "lr": 3e-3, "min_lr": 3e-4, "warmup_iters": 10,
                "eval_interval": 1000, "eval_iters": 1, "log_interval": 50, "device": "cpu"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures start before conftest's one-thread fixture; a tiny model trains fastest so
    try:
        return sft(base, TASKS["spam"].sft(400, "train", 0), workdir() / "spam", overrides=settings, progress=False)
    finally:
        torch.set_num_threads(threads)


@cache
def random_hf_dir() -> Path:
    export_run(random_run(), workdir() / "random-hf")
    return workdir() / "random-hf"


@cache
def spam_server():
    server = start_server(spam_run(), workdir() / "server.log")
    atexit.register(stop_server, server)  # before the directory goes: atexit runs last in, first out
    return server


def spam_questions(n: int) -> list[tuple[str, str, str]]:
    """(instruction, email, right label) for n held-out emails, in the task's own prompt format."""
    out = []
    for record in TASKS["spam"].rl_prompts(n, "test", 0):
        ask, email = record["prompt"][-1]["content"].split("\n", 1)
        out.append((ask, email, record["answer"]))
    return out


@cache
def random_hf_backend():
    """random_run as a transformers checkpoint, loaded once (importing transformers takes seconds)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network
    from groklm.apps.backends import HFBackend

    return HFBackend(random_hf_dir())
