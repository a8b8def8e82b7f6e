"""`groklm speedrun --out DIR`: the whole life of a model in one command, offline, on a CPU.

    tokenizer -> pretraining (your Python's standard library) -> SFT (synthetic chat tasks)
    -> reward model -> DPO and PPO -> evals of every stage -> DIR/report.md + DIR/report.json

Every stage writes its own run directory under DIR, which every other groklm command can
read (`groklm chat DIR/sft`, `groklm eval DIR/ppo --tasks all`, `groklm export DIR/base ...`).
The chat tasks come with verifiers (groklm.tasks), so each stage's gain is measured on
held-out test problems, not asserted; the chat stages are also measured on the heldout split
(test problems in wordings no training record uses), reported apart from the headline evals:
it tells a model that learned a task from one that recalls its templates. This module runs the
stages and measures; report.py writes what it measured as report.md.

What alignment is asked to fix. The SFT demonstrations are written the way people write them:
most answer in the format the task asks for ("7"), some in a wordier style ("Tom has 7
apples.", "Here is the JSON: {...}"); the verifiers and preference pairs say which one users
want. SFT imitates the mix, so the SFT model also answers chattily, some of the time; DPO
(preference pairs) and PPO (verifier reward) should move it to the wanted format. Their
targeted metric is the expected verifier score of a reply sampled at temperature 1 (how the
model is used in a chat; what PPO maximises) on test problems, reported with the KL from
the SFT model. On perfectly consistent demonstrations a model this size leaves nothing for
them to fix: its remaining errors (two-digit arithmetic, spelling a word backwards) are
capacity, not preference (docs/guide.md has the measurements).
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import torch

from groklm.data.prepare import prepare
from groklm.data.sources import pystdlib_files
from groklm.errors import ConfigError
from groklm.eval.harness import evaluate_run, generate_answers
from groklm.experiments.report import plot_evals, task_mean, write_report
from groklm.infer.decode import generate
from groklm.model import GPT
from groklm.rundir import METRICS_FILE
from groklm.runs import load
from groklm.tasks import HELDOUT, TASKS, get_tasks, make_sft
from groklm.tokenizer import Tokenizer
from groklm.train.dpo import train_dpo
from groklm.train.plots import read_metrics
from groklm.train.pretrain import pretrain
from groklm.train.reward import train_reward
from groklm.train.rl.ppo import train_ppo
from groklm.train.sft import sft

SAMPLE_PROMPTS = ["def ", "import os\n\n", "class Config:\n    "]
STAGE_DIRS = ("tokenizer", "data", "base", "sft", "reward", "dpo", "ppo")
REPORT_FILES = ("report.json", "report.md", "evals.png")
TUNED = ("sft", "reward", "dpo", "ppo")  # stages whose settings `--set STAGE.key=value` reaches
# Settings for a 2-core CPU: the whole pipeline in well under 20 minutes. A model this small
# learns the chat tasks only with a high SFT learning rate (3e-4 left it at ~20% mean accuracy,
# 1e-3 reaches ~60%); DPO keeps the chosen replies likely with the RPO term (plain DPO emptied
# the spam answers).
# PPO needs a larger learning rate than for a big model (3e-5 moved nothing in 40 steps) and 64
# answers a step to see the format's effect through the noise of the other tasks. KL coef 0.2
# gains as much as 0.05 at 0.47 nats from SFT instead of 0.74, without the greedy extract loss.
STAGE_SETTINGS = {
    # Muon for the hidden matrices: a lower val loss than AdamW in the same time on this model
    # (benchmarks/muon.py --mode speedrun; docs/performance.md)
    "pretrain": {"optimizer": "muon", "muon_lr": 0.02},
    "sft": {"max_iters": 1500, "lr": 1e-3, "min_lr": 1e-4},
    "reward": {"max_iters": 150},
    "dpo": {"max_iters": 150},
    "ppo": {"max_iters": 60, "lr": 1e-4, "min_lr": 1e-4, "prompts_per_step": 64, "batch_size": 32, "kl_coef": 0.2},
}
DPO_SFT_WEIGHT = 1.0
CHATTY_DEMONSTRATIONS = 0.3  # share of SFT demonstrations in the wordier style (see the docstring)
EVAL_TASKS = "all"
SAMPLES_PER_PROBLEM = 4  # sampled answers per test problem for the targeted metric
CHAT_STAGES = ("sft", "dpo", "ppo")


def stage_overrides(flat: dict) -> dict[str, dict]:
    """{"max_iters": 9, "sft.lr": 1e-4} -> {"pretrain": {"max_iters": 9}, "sft": {"lr": 1e-4}}."""
    staged: dict[str, dict] = {}
    for key, value in flat.items():
        stage, _, name = key.rpartition(".")
        stage = stage or "pretrain"
        if stage not in ("pretrain", *TUNED):
            raise ConfigError(f"--set {key}: unknown stage {stage!r}; stages: pretrain (no prefix), {', '.join(TUNED)}")
        staged.setdefault(stage, {})[name] = value
    return staged


def speedrun(
    out_dir: str | Path,
    preset: str = "tiny",
    vocab_size: int = 4096,
    overrides: dict[str, dict] | None = None,
    progress: bool = True,
    force: bool = False,
    eval_n: int = 100,
) -> dict:
    """Run every stage into `out_dir`; returns the report (also written as report.json/.md).

    overrides: per stage ("pretrain", "sft", "reward", "dpo", "ppo") settings, as `--set` takes.
    An earlier speedrun's stage directories in `out_dir` are an error, or replaced with `force`.
    """
    if vocab_size < 512:
        raise ConfigError(f"--vocab-size must be at least 512 for a useful BPE, got {vocab_size}")
    overrides = overrides or {}
    settings = {stage: {**STAGE_SETTINGS.get(stage, {}), **overrides.get(stage, {})} for stage in ("pretrain", *TUNED)}
    out = Path(out_dir)
    _clear_earlier_run(out, force)
    out.mkdir(parents=True, exist_ok=True)
    stages: dict[str, dict] = {}
    started = time.perf_counter()

    with _stage("tokenizer", stages):
        # The chat tasks' words are in the tokenizer's training text too, so a reply is a few
        # tokens rather than dozens of fragments of Python identifiers.
        chat_text = ["\n".join(m["content"] for m in r["messages"]) for r in make_sft(None, 300, "train", seed=0)]
        tokenizer = Tokenizer.train([*pystdlib_files(), *chat_text], vocab_size, progress=progress)
        tokenizer.save(out / "tokenizer")
        stages["tokenizer"] = {"vocab_size": tokenizer.vocab_size, "dir": str(out / "tokenizer")}

    with _stage("data", stages):
        meta = prepare(["pystdlib"], str(out / "tokenizer"), out / "data", progress=progress)
        corpus_bytes = sum(f.stat().st_size for f in pystdlib_files())
        stages["data"] = {"train_tokens": meta["train_tokens"], "val_tokens": meta["val_tokens"],
                          "documents": meta["documents"],
                          "bytes_per_token": corpus_bytes / (meta["train_tokens"] + meta["val_tokens"]),
                          "dir": str(out / "data")}

    with _stage("pretrain", stages):
        run = pretrain(out / "data", out / "base", preset=preset, overrides=settings["pretrain"], progress=progress)
        stages["pretrain"] = {**_pretrain_figures(run, vocab_size), "dir": str(run)}

    with _stage("sft", stages):
        run = sft(out / "base", "synthetic", out / "sft", overrides=settings["sft"], progress=progress,
                  synthetic_chatty=CHATTY_DEMONSTRATIONS)
        stages["sft"] = {**_last_figures(run, ["loss", "val_loss"]), "chatty_demonstrations": CHATTY_DEMONSTRATIONS,
                         "dir": str(run), "loss_plot": str(run / "loss.png")}

    with _stage("reward", stages):
        run = train_reward(out / "sft", "synthetic", out / "reward", overrides=settings["reward"], progress=progress)
        stages["reward"] = {**_last_figures(run, ["val_accuracy", "val_rewards/margins", "val_loss"]),
                            "chance_accuracy": 0.5, "dir": str(run), "loss_plot": str(run / "loss.png")}

    with _stage("dpo", stages):
        run = train_dpo(out / "sft", "synthetic", out / "dpo", sft_weight=DPO_SFT_WEIGHT, overrides=settings["dpo"],
                        progress=progress)
        stages["dpo"] = {**_last_figures(run, ["val_accuracy", "val_rewards/margins", "val_rewards/chosen",
                                                "val_rewards/rejected", "val_loss"]),
                         "dir": str(run), "loss_plot": str(run / "loss.png")}

    with _stage("ppo", stages):
        run = train_ppo(out / "sft", out / "ppo", reward="verifier", prompts="synthetic",
                        overrides=settings["ppo"], progress=progress)
        stages["ppo"] = {**_ppo_figures(run), "dir": str(run), "plot": str(run / "reward_kl.png")}

    with _stage("eval", stages):
        evals = _evaluate(out, eval_n, ("base", *CHAT_STAGES))
        evals_heldout = _evaluate(out, eval_n, CHAT_STAGES, split=HELDOUT)
        sampled = _evaluate(out, eval_n, CHAT_STAGES, temperature=1.0)
        conversations = _conversations(out)

    report = {"stages": stages, "evals": evals, "evals_heldout": evals_heldout, "sampled_evals": sampled,
              "targeted": _targeted(sampled),
              "conversations": conversations, "samples": _samples(out / "base"), "wall_s": _since(started)}
    plot_evals(report, out / "evals.png")
    write_report(out, report)
    return report


class _stage:
    """`with _stage(name, stages):` announces a stage and records its wall time."""

    def __init__(self, name: str, stages: dict):
        self.name, self.stages = name, stages

    def __enter__(self):
        print(f"== {self.name}", flush=True)
        self.clock = time.perf_counter()

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.stages.setdefault(self.name, {})["wall_s"] = _since(self.clock)


def _clear_earlier_run(out: Path, force: bool) -> None:
    """Remove what an earlier speedrun wrote into `out` (only that), if allowed."""
    earlier = [out / name for name in STAGE_DIRS + REPORT_FILES if (out / name).exists()]
    if not earlier:
        return
    if not force:
        raise ConfigError(f"{out} already holds a speedrun ({earlier[0].name}); pass --force to replace it, or pick another --out")
    for path in earlier:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _metrics(run: Path) -> list[dict]:
    return read_metrics(run / METRICS_FILE)


def _last_figures(run: Path, names: list[str]) -> dict:
    """The last logged value of each metric in `names` (validation metrics: at the last eval)."""
    records = _metrics(run)
    found = {}
    for name in names:
        values = [r[name] for r in records if name in r]
        found[name.replace("/", "_")] = values[-1] if values else float("nan")
    found["steps"] = records[-1]["step"] if records else 0
    return found


def _pretrain_figures(run: Path, vocab_size: int) -> dict:
    records = _metrics(run)
    vals = [r for r in records if "val_loss" in r]
    speeds = [r["tokens_per_sec"] for r in records if r.get("tokens_per_sec")]
    return {
        "params": GPT.from_run(run).num_params(),
        "steps": records[-1]["step"] if records else 0,
        "uniform_loss": math.log(vocab_size),  # what a model that learned nothing would score
        "first_eval_step": vals[0]["step"] if vals else 0,
        "val_loss_first_eval": vals[0]["val_loss"] if vals else float("nan"),
        "val_loss": vals[-1]["val_loss"] if vals else float("nan"),
        "train_loss": records[-1]["loss"] if records else float("nan"),
        "tokens_per_sec": sorted(speeds)[len(speeds) // 2] if speeds else 0.0,
        "loss_plot": str(run / "loss.png"),
    }


def _ppo_figures(run: Path) -> dict:
    """Mean verifier score and KL to the SFT model over the first and last tenth of PPO's steps."""
    records = [r for r in _metrics(run) if "score" in r]
    if not records:
        return {"steps": 0}
    tenth = max(1, len(records) // 10)
    mean = lambda rows, key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    return {"steps": records[-1]["step"], "score_start": mean(records[:tenth], "score"),
            "score_end": mean(records[-tenth:], "score"), "kl_end": mean(records[-tenth:], "kl")}


def _evaluate(out: Path, n: int, stages: tuple[str, ...], temperature: float = 0.0, split: str = "test") -> dict[str, dict]:
    """Per stage and task, on the same problems of `split` (test, or heldout): accuracy, mean
    verifier score and count of greedy replies, or (temperature > 0) of SAMPLES_PER_PROBLEM
    sampled replies per problem, with the aligned stages' KL from the SFT model."""
    evals = {}
    for stage in stages:
        reference = out / "sft" if temperature > 0 and stage != "sft" else None
        result = evaluate_run(out / stage, tasks=EVAL_TASKS, n=n, seed=0, temperature=temperature,
                              samples=SAMPLES_PER_PROBLEM, reference=reference, split=split)
        evals[stage] = {task: {key: r[key] for key in ("accuracy", "mean_score", "count", "kl") if key in r}
                        for task, r in result["tasks"].items()}
    return evals


def _targeted(sampled: dict[str, dict]) -> dict:
    """The metric DPO and PPO are asked to raise: the mean over tasks of the expected verifier
    score of a sampled reply, per stage, with the gain over SFT and the KL from SFT (nats per reply)."""
    sft_score = task_mean(sampled["sft"], "mean_score")
    targeted = {"metric": "expected verifier score of a reply sampled at temperature 1, test split, mean over tasks",
                "sft": {"score": sft_score, "accuracy": task_mean(sampled["sft"], "accuracy")}}
    for stage in CHAT_STAGES[1:]:
        score = task_mean(sampled[stage], "mean_score")
        targeted[stage] = {"score": score, "gain": score - sft_score, "accuracy": task_mean(sampled[stage], "accuracy"),
                           "kl_from_sft": task_mean(sampled[stage], "kl")}
    return targeted


def _conversations(out: Path) -> list[dict]:
    """The first test problem of each task, answered by every chat stage: greedy and one sampled reply."""
    records = [task.rl_prompts(1, split="test", seed=0)[0] for task in get_tasks()]
    prompts = [r["prompt"] for r in records]
    conversations = [{"task": r["task"], "messages": r["prompt"], "answer": r["answer"], "replies": {}} for r in records]
    for stage in CHAT_STAGES:
        model, tokenizer = load(out / stage)
        greedy = generate_answers(model, tokenizer, prompts)
        sampled = generate_answers(model, tokenizer, prompts, temperature=1.0, seed=1)
        for conversation, record, g, s in zip(conversations, records, greedy, sampled):
            conversation["replies"][stage] = {"greedy": g, "greedy_score": TASKS[record["task"]].verify(record, g),
                                              "sampled": s, "sampled_score": TASKS[record["task"]].verify(record, s)}
    return conversations


def _samples(run: Path) -> list[dict]:
    """Three continuations of Python-looking prompts by the base model."""
    model, tokenizer = load(run)
    samples = []
    for seed, prompt in enumerate(SAMPLE_PROMPTS):
        idx = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long)
        ids = generate(model, idx, max_new_tokens=80, temperature=0.8, top_k=50, seed=seed)[0].tolist()
        samples.append({"prompt": prompt, "seed": seed, "completion": tokenizer.decode(ids[idx.size(1):])})
    return samples


def _since(clock: float) -> float:
    return round(time.perf_counter() - clock, 2)
