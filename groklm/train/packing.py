"""Packing conversations into rows: how SFT turns chats of every length into full batches.

A conversation of n tokens is n-1 next-token predictions. Most chats are far shorter than
block_size, so one row per chat would spend most of each batch on padding. Instead several
chats share a row:

    inputs   [ chat 0 ......... | chat 1 ..... | chat 2 ....... | pad pad ]
    doc_ids  [ 0 0 0 0 0 0 0 0 0 | 1 1 1 1 1 1 | 2 2 2 2 2 2 2 2 | 3 3 3 3 ]
    targets  next token where the assistant speaks, IGNORE_INDEX (-100) everywhere else

doc_ids make the model restart positions and attention at every chat (GPT.packing_layout),
so a packed row trains exactly as its chats would one at a time, and the loss is the mean over
the same assistant tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from groklm.model.gpt import IGNORE_INDEX

Example = tuple[list[int], list[int]]  # (inputs, targets) of one conversation


def conversation_example(ids: list[int], trained: list[bool], block_size: int) -> tuple[Example, bool]:
    """Rendered chat (ids, trained mask) -> ((inputs, targets), truncated).

    Position t predicts ids[t+1], so its target is kept only where token t+1 is one the
    assistant said. A chat longer than block_size+1 tokens keeps its first block_size+1.
    """
    truncated = len(ids) > block_size + 1
    ids, trained = ids[: block_size + 1], trained[: block_size + 1]
    targets = [token if learn else IGNORE_INDEX for token, learn in zip(ids[1:], trained[1:])]
    return (ids[:-1], targets), truncated


@dataclass
class PackedRows:
    """Every row of a packed dataset, (rows, block_size) each: the three tensors of a batch."""

    inputs: torch.Tensor
    targets: torch.Tensor
    doc_ids: torch.Tensor
    fill: float  # fraction of positions that hold a conversation (the rest is padding)

    def __len__(self) -> int:
        return self.inputs.size(0)

    def batch(self, rows) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(rows, dtype=torch.long)
        return self.inputs[index], self.targets[index], self.doc_ids[index]


def pack(examples: list[Example], block_size: int, pad_id: int = 0) -> PackedRows:
    """Greedy packing in the given order: add each chat to the current row while it fits,
    otherwise start a new row. Chats are never split. The tail of each row is padding: its
    own doc id (so nothing attends across it), pad_id inputs and ignored targets."""
    rows: list[list[Example]] = []
    current: list[Example] = []
    used = 0
    for example in examples:
        length = len(example[0])
        if not 0 < length <= block_size:
            raise ValueError(f"a packed example needs 1..block_size={block_size} tokens, got {length}")
        if current and used + length > block_size:
            rows.append(current)
            current, used = [], 0
        current.append(example)
        used += length
    if current:
        rows.append(current)

    inputs = torch.full((len(rows), block_size), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), block_size), IGNORE_INDEX, dtype=torch.long)
    doc_ids = torch.empty((len(rows), block_size), dtype=torch.long)
    for r, row in enumerate(rows):
        doc_ids[r] = len(row)  # the padding's id; each chat below overwrites its own span
        start = 0
        for d, (x, y) in enumerate(row):
            end = start + len(x)
            inputs[r, start:end] = torch.tensor(x)
            targets[r, start:end] = torch.tensor(y)
            doc_ids[r, start:end] = d
            start = end
    fill = sum(len(x) for x, _ in examples) / max(1, len(rows) * block_size)
    return PackedRows(inputs, targets, doc_ids, fill)


def batch_rows(seed: int, step: int, count: int, n_rows: int) -> list[int]:
    """The `count` row indices of optimizer step `step`: epochs over the rows, each epoch in
    its own seeded order. A function of (seed, step) only, so a resumed run sees the same
    rows, and every row is seen once per epoch (unlike random sampling)."""
    first = step * count
    orders: dict[int, np.ndarray] = {}
    rows = []
    for i in range(first, first + count):
        epoch = i // n_rows
        if epoch not in orders:
            orders[epoch] = np.random.default_rng([seed, epoch]).permutation(n_rows)
        rows.append(int(orders[epoch][i % n_rows]))
    return rows
