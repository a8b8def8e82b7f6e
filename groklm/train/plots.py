"""The plots a training run draws from its metrics.jsonl into PNGs next to it: the loss curve
(every stage) and, for RL, the reward and the KL to the reference.

They use matplotlib's Figure directly (no pyplot): no global state and no display backend, so
they are safe on servers, in tests and from several threads."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from groklm.jsonl import read_jsonl
from groklm.rundir import atomic_path

LOSS_PLOT = "loss.png"
REWARD_KL_PLOT = "reward_kl.png"


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl, up to any line a crash cut short; [] before the first."""
    if not Path(path).is_file():
        return []
    return read_jsonl(path, stop_at_bad_line=True, allow_empty=True)


def plot_loss(metrics_path: Path, png_path: Path, title: str = "") -> Path:
    """Training loss at every log step, validation loss at every eval step, on one axis."""
    records = read_metrics(Path(metrics_path))
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    fig = Figure(figsize=(7, 4), dpi=100, layout="tight")
    ax = fig.subplots()
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1)
    if val:
        ax.plot(*zip(*val), "o-", label="val", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_png(fig, png_path)


def plot_reward_kl(metrics_path: Path, png_path: Path, title: str = "") -> Path:
    """Mean score and KL to the reference per step, one above the other: the score should rise
    while the KL stays moderate (a KL that runs away means the policy is gaming the reward)."""
    records = read_metrics(Path(metrics_path))
    steps = [r["step"] for r in records]
    fig = Figure(figsize=(7, 5), dpi=100, layout="tight")
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(steps, [r["score"] for r in records], linewidth=1)
    top.set_ylabel("reward (mean score)")
    top.set_title(title or "RL")
    bottom.plot(steps, [r["kl"] for r in records], color="tab:red", linewidth=1)
    bottom.set_ylabel("KL to reference (nats)")
    bottom.set_xlabel("step")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return save_png(fig, png_path)


def save_png(fig: Figure, png_path: Path) -> Path:
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(png_path)
