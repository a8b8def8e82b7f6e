"""Attention heat maps: which earlier tokens each head looks at, drawn as a grid per layer.

Row t of a head's map is the softmax weights query position t puts on positions 0..t, so each
row sums to 1 and everything above the diagonal is 0 (the causal mask). Common patterns to look
for: a bright diagonal (attend to yourself), the sub-diagonal (the previous token), a bright
first column (an "attention sink" used as a no-op), and stripes at repeated tokens (induction
heads copying what followed the last occurrence).

Uses matplotlib's object API (`Figure`, no pyplot), so it never opens a window or touches
global plotting state: safe in a CLI, a server or a notebook.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
from matplotlib.figure import Figure

from groklm.errors import DataError

# Whitespace is invisible on an axis; show it with visible stand-ins.
VISIBLE = {" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5", "\r": "\u240d"}


def token_labels(tokenizer, ids: list[int]) -> list[str]:
    """One readable label per token (a token can be part of a UTF-8 character: shown as \\xNN)."""
    labels = []
    for i in ids:
        text = tokenizer.token_bytes(i).decode("utf-8", errors="backslashreplace")
        labels.append("".join(VISIBLE.get(ch, ch) for ch in text) or "\u2205")
    return labels


def plot_layer(weights: torch.Tensor, labels: list[str], title: str, path: Path) -> None:
    """weights: (n_head, T, T) for one sequence -> a PNG with one heat map per head."""
    n_head, T, _ = weights.shape
    cols = math.ceil(math.sqrt(n_head))
    rows = math.ceil(n_head / cols)
    cell = max(3.0, 0.22 * T)  # inches per head: room for one label per token
    fig = Figure(figsize=(cols * cell, rows * cell + 0.6), layout="compressed")
    axes = fig.subplots(rows, cols, squeeze=False)
    fontsize = max(4, min(9, 220 / T))
    for head, ax in enumerate(axes.flat):
        if head >= n_head:
            ax.axis("off")
            continue
        image = ax.imshow(weights[head].float().cpu().numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_title(f"head {head}", fontsize=9)
        ax.set_xticks(range(T), labels, rotation=90, fontsize=fontsize)
        ax.set_yticks(range(T), labels, fontsize=fontsize)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
    fig.suptitle(f"{title}\nrow: query token, column: the key token it attends to", fontsize=10)
    with warnings.catch_warnings():  # a font without some rare glyph is not worth a warning per glyph
        warnings.filterwarnings("ignore", message="Glyph .* missing")
        fig.savefig(path, dpi=100)


def save_attention_maps(model, tokenizer, text: str, out_dir: str | Path) -> list[Path]:
    """Run `text` through the explicit attention path; write layer_00.png, layer_01.png, ..."""
    ids = tokenizer.encode(text)
    if not ids:
        raise DataError("the text is empty: give some text to look at")
    ids = ids[: model.config.block_size]
    device = next(model.parameters()).device
    maps = model.attention_weights(torch.tensor([ids], device=device))  # per layer: (1, n_head, T, T)
    labels = token_labels(tokenizer, ids)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for layer, weights in enumerate(maps):
        path = out_dir / f"layer_{layer:02d}.png"
        plot_layer(weights[0], labels, f"layer {layer}", path)
        paths.append(path)
    return paths
