"""`groklm seq2seq train|eval`: the encoder-decoder of groklm/model/seq2seq.py on its synthetic
tasks, with and without attention, measured by exact-match accuracy per input length.

    groklm seq2seq train --out runs/rev-attn --set task=reverse max_len=20
    groklm seq2seq train --out runs/rev-plain --set task=reverse max_len=20 attention=false
    groklm seq2seq eval runs/rev-attn runs/rev-plain --out runs/rev-eval

Training is a stage like the others (stage.py, loop.py), so a run directory looks like any other:
config.json (the task under "data"), model.safetensors, metrics.jsonl, checkpoint/, loss.png. Batches are a
function of (seed, step) as in pretraining: every step draws one input length, then a batch of
fresh random strings of that length (one length per batch: no padding to mask).
"""

from __future__ import annotations

import os
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from groklm.errors import CheckpointError, ConfigError
from groklm.model.seq2seq import Seq2Seq, Seq2SeqConfig, TaskConfig, exact_match_by_length, make_batch, plot_alignment, symbol_names
from groklm.model.weights import load_weights
from groklm.rundir import WEIGHTS_FILE, atomic_path, read_config, write_json
from groklm.train.config import TrainConfig, parse_value, split_overrides
from groklm.train.stage import Place, open_run, run_stage

STAGE = "seq2seq"
# A small GRU learns reversal of up to 20 symbols with attention in a few minutes on a CPU.
SEQ2SEQ_DEFAULTS = dict(batch_size=64, max_iters=1500, lr=3e-3, min_lr=3e-4, warmup_iters=50, weight_decay=0.0,
                        eval_interval=250, eval_iters=20, log_interval=25)
ACCURACY_FILE, ACCURACY_PLOT = "accuracy.json", "accuracy.png"
ALIGNMENT_LENGTH = 12  # the example drawn as an alignment heat map: long enough to show the pattern, short enough to read


# ---- training ---------------------------------------------------------------------------------


def train_seq2seq(out_dir: str | os.PathLike, overrides: dict | None = None, resume: bool = False,
                  progress: bool = True) -> Path:
    """Train an encoder-decoder into the run directory `out_dir`; returns its path.
    overrides: task, model and training keys (strings are parsed by type)."""
    run, saved = open_run(out_dir, STAGE, resume)
    task, model_cfg, train_cfg = resolve_config(saved, overrides or {})
    config = {"stage": STAGE, "parent": None, "arch": STAGE, "model": model_cfg.to_dict(), "train": train_cfg.to_dict(),
              "data": {"task": task.to_dict()}}

    def build(place: Place):
        model = Seq2Seq(model_cfg).to(place.device)
        if place.dist.is_main:
            print(f"seq2seq ({'with' if model_cfg.attention else 'without'} attention): {model.num_params():,} parameters, "
                  f"{task.task} of {task.min_len}..{task.max_len} symbols, {place.dist.world_size} process(es) on "
                  f"{place.device}", file=sys.stderr, flush=True)
        mean_length = (task.min_len + task.max_len) / 2 + 1
        return place.setup(model, make_batches(task, train_cfg), make_val_batch(task, train_cfg),
                           tokens_per_micro=int(train_cfg.batch_size * mean_length),  # output tokens, on average
                           loss_fn=seq2seq_loss)

    return run_stage(run, config, train_cfg, build, resume=resume, progress=progress)


def resolve_config(saved: dict | None, overrides: dict):
    """(TaskConfig, Seq2SeqConfig, TrainConfig) from the defaults and overrides, or the saved run."""
    task_fields = {f.name: f for f in fields(TaskConfig)}
    task_over = {k: parse_value(k, v, task_fields[k].type) for k, v in overrides.items() if k in task_fields}
    model_over, train_over = split_overrides({k: v for k, v in overrides.items() if k not in task_fields}, Seq2SeqConfig)
    if "vocab_size" in model_over:
        raise ConfigError("vocab_size follows the task (n_symbols + 2); set n_symbols instead")
    if saved:
        if task_over or model_over:
            changed = sorted({**task_over, **model_over})
            raise ConfigError(f"the task and the model are fixed once trained; cannot change {changed} on resume")
        return (TaskConfig(**saved["data"]["task"]), Seq2SeqConfig.from_dict(saved["model"]),
                TrainConfig.from_dict({**saved["train"], **train_over}))
    task = TaskConfig(**task_over)
    model = Seq2SeqConfig.from_dict({**model_over, "vocab_size": task.vocab_size})
    return task, model, TrainConfig.from_dict({**SEQ2SEQ_DEFAULTS, **train_over})


def generator_for(*key: int):
    """A torch generator seeded from a tuple such as (seed, stream, step, micro)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))


def make_batches(task, cfg):
    def batches(step: int, micros: range):
        for m in micros:
            generator = generator_for(cfg.seed, 0, step, m)
            length = int(torch.randint(task.min_len, task.max_len + 1, (1,), generator=generator))
            yield make_batch(task, length, cfg.batch_size, generator)

    return batches


def make_val_batch(task, cfg):
    """Validation batch i has length min_len + i (cycling), so eval_iters batches cover the lengths evenly."""
    def val_batch(i: int):
        length = task.min_len + i % (task.max_len - task.min_len + 1)
        return make_batch(task, length, cfg.batch_size, generator_for(cfg.seed, 1, i))

    return val_batch


def seq2seq_loss(model, batch):
    """Cross-entropy of the target tokens, and (teacher-forced) token accuracy as a stat."""
    logits, loss = model(*batch)
    return loss, {"token_accuracy": (logits.argmax(dim=-1) == batch[2]).float().mean()}


# ---- evaluation -------------------------------------------------------------------------------


def load_seq2seq(run: Path):
    """(model in eval mode, TaskConfig) of a seq2seq run directory."""
    saved = read_config(run)
    if saved.get("arch") != STAGE:
        raise CheckpointError(f"{run} is not a seq2seq run (its arch is {saved['arch']!r}); "
                              "train one with `groklm seq2seq train`")
    model = Seq2Seq(Seq2SeqConfig.from_dict(saved["model"]))
    load_weights(model, run / WEIGHTS_FILE)
    return model.eval(), TaskConfig(**saved["data"]["task"])


def evaluate_runs(runs: list[Path], out: Path, n: int = 200, max_len: int | None = None, seed: int = 0) -> dict:
    """Exact match by length for each run -> out/accuracy.json, out/accuracy.png, and an
    alignment heat map per attention run; returns what accuracy.json holds."""
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    if max_len is not None and max_len < 1:
        raise ConfigError(f"--max-len must be at least 1, got {max_len}")
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, run in zip(unique_names(runs), runs):
        model, task = load_seq2seq(run)
        lengths = list(range(1, (max_len or task.max_len) + 1))
        accuracy = exact_match_by_length(model, task, lengths, n, seed)
        results[name] = {"run": str(run), "attention": model.config.attention, "params": model.num_params(),
                         "task": task.to_dict(), "exact_match": {str(k): v for k, v in accuracy.items()}}
        if model.config.attention:
            results[name]["alignment_plot"] = str(draw_alignment(model, task, name, out, seed))
    write_json(out / ACCURACY_FILE, results)
    plot_accuracy(results, out / ACCURACY_PLOT)
    return results


def unique_names(runs: list[Path]) -> list[str]:
    names = [run.resolve().name for run in runs]
    return [name if names.count(name) == 1 else f"{name}-{i}" for i, name in enumerate(names)]


def draw_alignment(model, task, name: str, out: Path, seed: int) -> Path:
    """One example's attention weights as a heat map: out/alignment_<name>.png."""
    length = min(ALIGNMENT_LENGTH, task.max_len)
    source, _, _ = make_batch(task, length, 1, generator_for(seed, 2, length))
    output, alignment = model.greedy(source, length + 1)
    return plot_alignment(alignment[0], symbol_names(task, source[0].tolist()), symbol_names(task, output[0].tolist()),
                          out / f"alignment_{name}.png", f"{name}: {task.task}, where each output token looked")


def plot_accuracy(results: dict, path: Path) -> Path:
    """Exact match against input length, one line per run, trained lengths shaded."""
    fig = Figure(figsize=(7, 4), dpi=100, layout="constrained")
    ax = fig.subplots()
    for name, result in results.items():
        lengths = [int(k) for k in result["exact_match"]]
        label = f"{name} ({'attention' if result['attention'] else 'no attention'}, {result['params']:,} params)"
        ax.plot(lengths, list(result["exact_match"].values()), "o-", markersize=3, label=label)
    trained = max(result["task"]["max_len"] for result in results.values())
    ax.axvspan(0.5, trained + 0.5, color="grey", alpha=0.08, label="lengths trained on")
    ax.set_xlabel("input length (symbols)")
    ax.set_ylabel("exact-match accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("seq2seq: whole output exactly right, by input length")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
