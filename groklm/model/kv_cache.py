"""The KV cache: remember every layer's keys and values so each new token costs one position.

Without a cache, generating token t re-runs the model over all t previous tokens, so a reply
of n tokens costs O(n^2) token-passes. But the keys and values of earlier positions never
change (attention is causal), so we compute them once, keep them here, and each decode step
feeds only the newest token: its query attends over the cached keys.

The cache has a fixed number of *slots*, one per sequence in flight, each with room for
block_size positions. A batch can mix sequences of different lengths: every row writes its
new keys at its own positions, and a mask hides the cache entries a row has not written (or
that an earlier occupant of the slot left behind).

    keys[layer]: (slots, block_size, n_kv_head, head_dim)     lengths: (slots,) tokens cached
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from groklm.model.config import GPTConfig


@dataclass
class LayerCache:
    """What one attention layer needs for one forward pass over cached sequences."""

    keys: torch.Tensor  # (slots, block_size, n_kv_head, head_dim), this layer's store
    values: torch.Tensor
    batch: CacheBatch

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Store the new keys/values (B, n_kv_head, T, head_dim); return every key and value the
        batch may read, (B, n_kv_head, L, head_dim) for L = the longest row, and the mask
        (see CacheBatch)."""
        b = self.batch
        if isinstance(b.rows, slice) and b.mask is None:  # adjacent rows, one token each, same position
            where = (b.rows, slice(b.length - 1, b.length))  # a plain strided copy: the cheapest write
        else:  # (slot, position) lead the store's shape, so this is one scatter of (B, T) rows
            where = (b.slots[:, None], b.positions)
        self.keys[where] = k.transpose(1, 2)
        self.values[where] = v.transpose(1, 2)
        keys, values = self.keys[b.rows, : b.length], self.values[b.rows, : b.length]
        return keys.transpose(1, 2), values.transpose(1, 2), b.mask


@dataclass
class CacheBatch:
    """One forward pass's view of the cache: B sequences (cache rows `slots`), T new tokens each."""

    slots: torch.Tensor  # (B,)
    rows: slice | torch.Tensor  # how to read those rows: a slice (a view, no copy) when they are adjacent
    positions: torch.Tensor  # (B, T) absolute position of each new token
    length: int  # keys to read per row: the longest row's length after this pass
    # (B, 1, T, length) "may attend": a new token sees cached positions up to its own. None when
    # every row sees every key read (one new token per row, all rows the same length).
    mask: torch.Tensor | None


class KVCache:
    def __init__(self, config: GPTConfig, slots: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        shape = (slots, config.block_size, config.n_kv_head, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.lengths = [0] * slots  # tokens cached per slot

    @property
    def slots(self) -> int:
        return len(self.lengths)

    def batch(self, slots: list[int], new_tokens: int) -> CacheBatch:
        device = self.keys[0].device if self.keys else "cpu"
        starts = [self.lengths[s] for s in slots]
        positions = torch.tensor(starts, device=device)[:, None] + torch.arange(new_tokens, device=device)
        length = max(starts) + new_tokens
        adjacent = slots == list(range(slots[0], slots[0] + len(slots)))
        rows = slice(slots[0], slots[0] + len(slots)) if adjacent else torch.tensor(slots, device=device)
        mask = None
        if new_tokens > 1 or len(set(starts)) > 1:
            mask = torch.arange(length, device=device)[None, None, None, :] <= positions[:, None, :, None]
        return CacheBatch(torch.tensor(slots, device=device), rows, positions, length, mask)

    def layer(self, index: int, batch: CacheBatch) -> LayerCache:
        return LayerCache(self.keys[index], self.values[index], batch)

    def advance(self, slots: list[int], new_tokens: int) -> None:
        for s in slots:
            self.lengths[s] += new_tokens

    def reset(self, slot: int) -> None:
        """Free a slot: its old entries stay in memory but are masked out for the next sequence."""
        self.lengths[slot] = 0
