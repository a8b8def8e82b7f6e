"""The plot of `groklm tokenizer stats --plot`: what the same text costs, file by file and tokenizer
by tokenizer. Apart from visualize.py so that looking at tokens never loads matplotlib."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure


def cost_figure(rows: list[dict], tokenizer_names: list[str], title: str = "") -> Figure:
    """Grouped bars, one group per file and one bar per tokenizer: the relative cost when
    `add_relative_costs` set it (a line marks 1, the reference), else tokens per byte."""
    relative = "relative_cost" in rows[0]["tokenizers"][0]
    key = "relative_cost" if relative else "tokens_per_byte"
    fig = Figure(figsize=(max(6.0, 0.9 * len(rows) + 2), 4), dpi=100, layout="tight")
    ax = fig.subplots()
    width = 0.8 / len(tokenizer_names)
    for k, name in enumerate(tokenizer_names):
        xs = [n + (k - (len(tokenizer_names) - 1) / 2) * width for n in range(len(rows))]
        ax.bar(xs, [row["tokenizers"][k][key] for row in rows], width, label=name)
    if relative:
        ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rows)), [Path(row["file"]).stem for row in rows])
    ax.set_ylabel("tokens / tokens of the reference" if relative else "tokens per byte")
    ax.set_title(title or ("what the same text costs each language" if relative else "tokens per byte"))
    ax.legend(fontsize="small")
    return fig
