"""The loss curve of a run, drawn from its metrics.jsonl into a PNG next to it."""

from __future__ import annotations

import json
from pathlib import Path

LOSS_PLOT = "loss.png"


def read_metrics(path: Path) -> list[dict]:
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


def plot_loss(metrics_path: Path, png_path: Path, title: str = "") -> Path:
    """Training loss at every log step, validation loss at every eval step, on one axis."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, safe on servers and in tests
    import matplotlib.pyplot as plt

    from groklm.rundir import atomic_path

    records = read_metrics(Path(metrics_path))
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1)
    if val:
        ax.plot(*zip(*val), "o-", label="val", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(png_path)
