"""`groklm seq2seq train|eval`: the encoder-decoder of groklm/model/seq2seq.py on its synthetic
tasks, with and without attention, measured by exact-match accuracy per input length.

    groklm seq2seq train --out runs/rev-attn --set task=reverse max_len=20
    groklm seq2seq train --out runs/rev-plain --set task=reverse max_len=20 attention=false
    groklm seq2seq eval runs/rev-attn runs/rev-plain --out runs/rev-eval

Training uses the shared loop (loop.py), so a run directory looks like any other: config.json
(model, task, train), model.safetensors, metrics.jsonl, checkpoint/, loss.png. Batches are a
function of (seed, step) as in pretraining: every step draws one input length, then a batch of
fresh random strings of that length (one length per batch: no padding to mask).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from pathlib import Path

from groklm.errors import CheckpointError, ConfigError
from groklm.rundir import CHECKPOINT_DIR, CONFIG_FILE, read_config, write_json

STAGE = "seq2seq"
# A small GRU learns reversal of up to 20 symbols with attention in a few minutes on a CPU.
SEQ2SEQ_DEFAULTS = dict(batch_size=64, max_iters=1500, lr=3e-3, min_lr=3e-4, warmup_iters=50, weight_decay=0.0,
                        eval_interval=250, eval_iters=20, log_interval=25)
ACCURACY_FILE, ACCURACY_PLOT = "accuracy.json", "accuracy.png"
ALIGNMENT_LENGTH = 12  # the example drawn as an alignment heat map: long enough to show the pattern, short enough to read


def register(subparsers) -> None:
    from groklm.train.config import add_training_arguments

    parser = subparsers.add_parser(
        "seq2seq",
        help="train and measure a GRU encoder-decoder, with and without attention, on synthetic tasks",
        description="Sequence to sequence on a synthetic transduction task (reverse, translate): where a "
        "fixed-size hidden state breaks down with input length, and attention holds.",
    )
    actions = parser.add_subparsers(dest="seq2seq_command", metavar="ACTION", required=True)
    train = actions.add_parser(
        "train",
        help="train an encoder-decoder into a run directory",
        description="Keys for --set: the task (task=reverse|translate, n_symbols, min_len, max_len), the model "
        "(n_embd, n_hidden, attention=true|false) and any training setting (max_iters, lr, ...).",
    )
    train.add_argument("--out", required=True, metavar="RUN", help="run directory to write")
    add_training_arguments(train, "override a setting, e.g. --set task=translate max_len=30 attention=false")
    train.set_defaults(func=run_train)

    evaluate = actions.add_parser(
        "eval",
        help="exact-match accuracy by input length (JSON + plot) and the attention alignment heat map",
        description="Greedy-decode fresh random inputs of every length and count exact matches. Several RUNs "
        "are drawn on one plot. Writes OUT/accuracy.json, OUT/accuracy.png and, for attention runs, "
        "OUT/alignment_<run>.png.",
    )
    evaluate.add_argument("runs", nargs="+", type=Path, metavar="RUN")
    evaluate.add_argument("--out", type=Path, help="where the results go (default: the first RUN)")
    evaluate.add_argument("--n", type=int, default=200, help="inputs per length (default 200)")
    evaluate.add_argument("--max-len", type=int, help="longest input (default: the longest trained on; "
                          "more measures generalisation to unseen lengths)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.set_defaults(func=run_eval)


# ---- training ---------------------------------------------------------------------------------


def train_seq2seq(out_dir: str | os.PathLike, overrides: dict | None = None, resume: bool = False,
                  progress: bool = True) -> Path:
    """Train an encoder-decoder into the run directory `out_dir`; returns its path.
    overrides: task, model and training keys (strings are parsed by type)."""
    from groklm.model.seq2seq import Seq2Seq
    from groklm.train.distributed import Distributed
    from groklm.train.loop import Setup, resolve_device, train_and_save
    from groklm.train.pretrain import seed_everything

    out = Path(out_dir)
    task, model_cfg, train_cfg = resolve_config(out, overrides or {}, resume)
    device = resolve_device(train_cfg)
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / CONFIG_FILE, {"model": model_cfg.to_dict(), "task": task.to_dict(), "train": train_cfg.to_dict(),
                                       "stage": STAGE, "arch": STAGE})
    seed_everything(train_cfg.seed)
    model = Seq2Seq(model_cfg).to(device)
    print(f"seq2seq ({'with' if model_cfg.attention else 'without'} attention): {model.num_params():,} parameters, "
          f"{task.task} of {task.min_len}..{task.max_len} symbols on {device}", file=sys.stderr, flush=True)
    mean_length = (task.min_len + task.max_len) / 2 + 1
    setup = Setup(
        model=model,
        batches=make_batches(task, train_cfg),
        val_batch=make_val_batch(task, train_cfg),
        tokens_per_micro=int(train_cfg.batch_size * mean_length),  # output tokens, on average
        run_dir=out,
        dist=Distributed(),
        device=device,
        loss_fn=seq2seq_loss,
    )
    train_and_save(train_cfg, setup, f"seq2seq {out.name}", resume=resume, progress=progress)
    return out


def resolve_config(out: Path, overrides: dict, resume: bool):
    """(TaskConfig, Seq2SeqConfig, TrainConfig) from the defaults and overrides, or the saved run."""
    from groklm.model.seq2seq import Seq2SeqConfig, TaskConfig
    from groklm.train.config import TrainConfig, parse_value, split_overrides

    task_fields = {f.name: f for f in fields(TaskConfig)}
    task_over = {k: parse_value(k, v, task_fields[k].type) for k, v in overrides.items() if k in task_fields}
    model_over, train_over = split_overrides({k: v for k, v in overrides.items() if k not in task_fields}, Seq2SeqConfig)
    if "vocab_size" in model_over:
        raise ConfigError("vocab_size follows the task (n_symbols + 2); set n_symbols instead")
    if resume:
        saved = read_config(out)
        if saved.get("stage") != STAGE:
            raise ConfigError(f"{out} is a {saved.get('stage')!r} run, not a seq2seq run; resume it with its own command")
        if task_over or model_over:
            raise ConfigError(f"the task and the model are fixed once trained; cannot change {sorted({**task_over, **model_over})} on resume")
        return (TaskConfig(**saved["task"]), Seq2SeqConfig.from_dict(saved["model"]),
                TrainConfig.from_dict({**saved["train"], **train_over}))
    if (out / CONFIG_FILE).exists() or (out / CHECKPOINT_DIR).exists():
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    task = TaskConfig(**task_over)
    model = Seq2SeqConfig.from_dict({**model_over, "vocab_size": task.vocab_size})
    return task, model, TrainConfig.from_dict({**SEQ2SEQ_DEFAULTS, **train_over})


def generator_for(*key: int):
    """A torch generator seeded from a tuple such as (seed, stream, step, micro)."""
    import numpy as np
    import torch

    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))


def make_batches(task, cfg):
    import torch

    from groklm.model.seq2seq import make_batch

    def batches(step: int, micros: range):
        for m in micros:
            generator = generator_for(cfg.seed, 0, step, m)
            length = int(torch.randint(task.min_len, task.max_len + 1, (1,), generator=generator))
            yield make_batch(task, length, cfg.batch_size, generator)

    return batches


def make_val_batch(task, cfg):
    """Validation batch i has length min_len + i (cycling), so eval_iters batches cover the lengths evenly."""
    from groklm.model.seq2seq import make_batch

    def val_batch(i: int):
        length = task.min_len + i % (task.max_len - task.min_len + 1)
        return make_batch(task, length, cfg.batch_size, generator_for(cfg.seed, 1, i))

    return val_batch


def seq2seq_loss(model, batch):
    """Cross-entropy of the target tokens, and (teacher-forced) token accuracy as a stat."""
    logits, loss = model(*batch)
    return loss, {"token_accuracy": (logits.argmax(dim=-1) == batch[2]).float().mean()}


def run_train(args: argparse.Namespace) -> None:
    from groklm.train.config import parse_set_args
    from groklm.train.plots import read_metrics

    run = train_seq2seq(args.out, parse_set_args(args.overrides), resume=args.resume, progress=not args.no_progress)
    last = read_metrics(run / "metrics.jsonl")[-1]
    print(f"{run}: step {last['step']}, val loss {last.get('val_loss', float('nan')):.4f}, "
          f"val token accuracy {last.get('val_token_accuracy', float('nan')):.3f}")


# ---- evaluation -------------------------------------------------------------------------------


def load_seq2seq(run: Path):
    """(model in eval mode, TaskConfig) of a seq2seq run directory."""
    from groklm.model.seq2seq import Seq2Seq, Seq2SeqConfig, TaskConfig
    from groklm.rundir import WEIGHTS_FILE, load_weights

    saved = read_config(run)
    if saved.get("arch") != STAGE:
        raise CheckpointError(f"{run} is not a seq2seq run (its arch is {saved.get('arch', 'gpt')!r}); train one with `groklm seq2seq train`")
    model = Seq2Seq(Seq2SeqConfig.from_dict(saved["model"]))
    load_weights(model, run / WEIGHTS_FILE)
    return model.eval(), TaskConfig(**saved["task"])


def evaluate_runs(runs: list[Path], out: Path, n: int = 200, max_len: int | None = None, seed: int = 0) -> dict:
    """Exact match by length for each run -> out/accuracy.json, out/accuracy.png, and an
    alignment heat map per attention run; returns what accuracy.json holds."""
    from groklm.model.seq2seq import exact_match_by_length

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
    from groklm.model.seq2seq import make_batch, plot_alignment, symbol_names

    length = min(ALIGNMENT_LENGTH, task.max_len)
    source, _, _ = make_batch(task, length, 1, generator_for(seed, 2, length))
    output, alignment = model.greedy(source, length + 1)
    return plot_alignment(alignment[0], symbol_names(task, source[0].tolist()), symbol_names(task, output[0].tolist()),
                          out / f"alignment_{name}.png", f"{name}: {task.task}, where each output token looked")


def plot_accuracy(results: dict, path: Path) -> Path:
    """Exact match against input length, one line per run, trained lengths shaded."""
    from matplotlib.figure import Figure

    from groklm.rundir import atomic_path

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


def run_eval(args: argparse.Namespace) -> None:
    out = args.out or args.runs[0]
    results = evaluate_runs(args.runs, out, args.n, args.max_len, args.seed)
    print(accuracy_table(results))
    print(f"wrote {out / ACCURACY_FILE}, {out / ACCURACY_PLOT}"
          + "".join(f", {r['alignment_plot']}" for r in results.values() if "alignment_plot" in r))


def accuracy_table(results: dict) -> str:
    """A plain-text table: one row per length, one column per run."""
    names = list(results)
    lengths = sorted({int(k) for r in results.values() for k in r["exact_match"]})
    rows = ["length  " + "  ".join(f"{name:>14}" for name in names)]
    for length in lengths:
        cells = [results[name]["exact_match"].get(str(length)) for name in names]
        rows.append(f"{length:>6}  " + "  ".join(f"{c:>14.3f}" if c is not None else f"{'':>14}" for c in cells))
    return "\n".join(rows)

