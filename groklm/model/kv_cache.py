"""The KV cache: remember every layer's keys and values so each new token costs one position.

Without a cache, generating token t re-runs the model over all t previous tokens, so a reply
of n tokens costs O(n^2) token-passes. But the keys and values of earlier positions never
change (attention is causal), so we compute them once, keep them here, and each decode step
feeds only the newest token: its query attends over the cached keys.

Memory is a pool of fixed-size *pages* (page_size positions each), sized from a byte budget
rather than slots x the model's whole context (a 30-layer model with an 8192-token context
would need gigabytes per slot). Each *slot* (one sequence in flight) has a page table: its
position p lives at row p % page_size of page table[p // page_size]. Pages are taken as a
sequence grows and given back when it ends, so short sequences leave room for long ones.

    keys[layer]: (pages, page_size, n_kv_head, head_dim)   tables[slot]: page ids   lengths[slot]

A batch can mix sequences of different lengths: every row writes its new keys at its own
positions, and a mask hides the positions a row has not written (its table is padded with
page 0 up to the longest row's).

Prefix caching: the pages holding a prompt can outlive it. A full page is remembered under
(the page before it, its tokens), so a page is found again only after the very same tokens
from position 0: the keys of a position depend on every token before it, and nothing else.
A new sequence whose first tokens match shares those pages (read-only: positions are never
rewritten, and its own tokens go to pages of its own) and computes only the rest. Remembered
pages nobody is using are given back least recently used first when the pool runs out.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch

from groklm.errors import ConfigError
from groklm.model.config import GPTConfig

PAGE_SIZE = 16  # positions per page: small enough to waste little, large enough to gather fast


@dataclass
class LayerCache:
    """What one attention layer needs for one forward pass over cached sequences."""

    keys: torch.Tensor  # (pages, page_size, n_kv_head, head_dim), this layer's store
    values: torch.Tensor
    batch: CacheBatch

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Store the new keys/values (B, n_kv_head, T, head_dim); return every key and value the
        batch may read, (B, n_kv_head, L, head_dim) for L = the longest row, and the mask
        (see CacheBatch)."""
        b = self.batch
        rows, heads, dim = k.size(0), k.size(1), k.size(3)
        flat_keys, flat_values = self.keys.view(-1, heads, dim), self.values.view(-1, heads, dim)
        flat_keys.index_copy_(0, b.where, k.transpose(1, 2).reshape(-1, heads, dim))  # one scatter of the B x T new rows
        flat_values.index_copy_(0, b.where, v.transpose(1, 2).reshape(-1, heads, dim))
        if b.run is not None:  # one row on consecutive pages: read them where they are
            keys, values = self.keys[b.run], self.values[b.run]
        else:  # gather whole pages
            keys, values = self.keys.index_select(0, b.pages.view(-1)), self.values.index_select(0, b.pages.view(-1))
        keys = keys.view(rows, -1, heads, dim)[:, : b.length]  # (B, L, heads, dim)
        values = values.view(rows, -1, heads, dim)[:, : b.length]
        return keys.transpose(1, 2), values.transpose(1, 2), b.mask


@dataclass
class CacheBatch:
    """One forward pass's view of the cache: B sequences (cache rows `slots`), T new tokens each."""

    slots: list[int]
    pages: torch.Tensor  # (B, P) each row's page table, padded to the longest with page 0
    where: torch.Tensor  # (B * T,) the pool row (page * page_size + offset) of each new token
    positions: torch.Tensor  # (B, T) absolute position of each new token
    length: int  # keys to read per row: the longest row's length after this pass
    # (B, 1, T, length) "may attend": a new token sees cached positions up to its own. None when
    # every row sees every key read (one new token per row, all rows the same length).
    mask: torch.Tensor | None
    # One row whose pages are consecutive in the pool (the usual case for a lone request: free
    # pages go out lowest first): those pages as a slice, read in place instead of gathered.
    run: slice | None = None


def bytes_per_token(config: GPTConfig, dtype: torch.dtype = torch.float32) -> int:
    """What one cached position costs: a key and a value per layer and kv head."""
    element = torch.empty((), dtype=dtype).element_size()
    return 2 * config.n_layer * config.n_kv_head * config.head_dim * element


class KVCache:
    """`slots` sequences over a pool of pages. budget_bytes None: room for every slot's whole
    context (the pool never runs out); otherwise as many pages as the budget holds (at most that)."""

    def __init__(self, config: GPTConfig, slots: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 budget_bytes: int | None = None, page_size: int = PAGE_SIZE):
        self.page_size = min(page_size, config.block_size)
        pages = slots * math.ceil(config.block_size / self.page_size)
        if budget_bytes is not None and bytes_per_token(config, dtype):
            pages = min(pages, budget_bytes // (self.page_size * bytes_per_token(config, dtype)))
        if pages < 1:
            raise ConfigError(f"a KV-cache budget of {budget_bytes} bytes holds no page of {self.page_size} positions "
                              f"({self.page_size * bytes_per_token(config, dtype)} bytes)")
        shape = (pages, self.page_size, config.n_kv_head, config.head_dim)
        # zeros, not empty: a masked-out position still meets a value (weight 0), and 0 * NaN is NaN
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.device = device
        self.lengths = [0] * slots  # tokens cached per slot
        self.tables: list[list[int]] = [[] for _ in range(slots)]
        self.refs = [0] * pages  # holders of each page: slots, and the prefix cache
        self.free = list(range(pages - 1, -1, -1))  # a stack: the lowest page ids go out first
        # the prefix cache: (previous page or -1, the page's tokens) -> page, least recently used first
        self.prefixes: OrderedDict[tuple[int, tuple[int, ...]], int] = OrderedDict()
        self.key_of: dict[int, tuple[int, tuple[int, ...]]] = {}  # remembered page -> its key
        self.children = [0] * pages  # remembered pages that continue each page

    @property
    def slots(self) -> int:
        return len(self.lengths)

    @property
    def pages(self) -> int:
        return len(self.refs)

    @property
    def capacity(self) -> int:
        """The most positions one sequence can hold: the whole pool."""
        return self.pages * self.page_size

    # ---- pages ----------------------------------------------------------------------------------

    def available(self) -> int:
        """Pages that can be had now: free ones, and remembered ones nobody else holds."""
        return len(self.free) + sum(1 for page in self.key_of if self.refs[page] == 1)

    def reserve(self, slot: int, new_tokens: int) -> bool:
        """Give `slot` the pages it needs to hold `new_tokens` more positions; False (and nothing
        taken) when the pool cannot, even after forgetting unused remembered prefixes."""
        need = math.ceil((self.lengths[slot] + new_tokens) / self.page_size) - len(self.tables[slot])
        if need > len(self.free) and need > self.available():
            return False
        while len(self.free) < need:
            self._evict()
        for _ in range(max(need, 0)):
            page = self.free.pop()
            self.refs[page] = 1
            self.tables[slot].append(page)
        return True

    def reset(self, slot: int) -> None:
        """Free a slot: its pages go back to the pool unless the prefix cache (or another slot) holds them."""
        for page in self.tables[slot]:
            self._drop(page)
        self.tables[slot] = []
        self.lengths[slot] = 0

    def _drop(self, page: int) -> None:
        self.refs[page] -= 1
        if self.refs[page] == 0:
            self.free.append(page)

    # ---- prefix caching -------------------------------------------------------------------------

    def match(self, tokens: list[int]) -> list[int]:
        """The remembered pages that hold the longest run of whole pages at the start of `tokens`,
        leaving at least one token to compute (its logits are what the caller samples from)."""
        pages, parent = [], -1
        for start in range(0, len(tokens) - 1 - self.page_size + 1, self.page_size):
            key = (parent, tuple(tokens[start: start + self.page_size]))
            page = self.prefixes.get(key)
            if page is None:
                break
            self.prefixes.move_to_end(key)  # parents before children: a chain is evicted from its end
            pages.append(page)
            parent = page
        return pages

    def share(self, slot: int, pages: list[int]) -> None:
        """Start an empty slot with the positions held in `pages` (from `match`)."""
        assert not self.tables[slot], "share into an empty slot"
        for page in pages:
            self.refs[page] += 1
        self.tables[slot] = list(pages)
        self.lengths[slot] = len(pages) * self.page_size

    def remember(self, slot: int, tokens: list[int]) -> None:
        """Keep the whole pages of `slot` that hold `tokens` (its first positions, already
        computed) for later sequences that start the same way."""
        parent = -1
        for i, page in enumerate(self.tables[slot][: min(len(tokens), self.lengths[slot]) // self.page_size]):
            key = (parent, tuple(tokens[i * self.page_size: (i + 1) * self.page_size]))
            known = self.prefixes.get(key)
            if known is None:
                self.prefixes[key] = page
                self.key_of[page] = key
                self.refs[page] += 1
                if parent >= 0:
                    self.children[parent] += 1
            elif known != page:  # computed twice (two equal prompts in one pass): keep the first, and stop
                return  # here, so every remembered page's parent is held by whoever holds the page
            self.prefixes.move_to_end(key)
            parent = page

    def forget_prefixes(self) -> None:
        """Drop every remembered prefix (e.g. the model's weights changed)."""
        for page in list(self.key_of):
            self._drop(page)
        self.prefixes.clear()
        self.key_of.clear()
        self.children = [0] * self.pages

    def _evict(self) -> None:
        """Give back the least recently used remembered page that nothing else holds and nothing continues."""
        key = next((key for key, page in self.prefixes.items() if self.refs[page] == 1 and self.children[page] == 0), None)
        if key is None:
            raise RuntimeError("no remembered page to evict")  # reserve() counted them first
        page = self.prefixes.pop(key)
        del self.key_of[page]
        if key[0] >= 0:
            self.children[key[0]] -= 1
        self._drop(page)

    # ---- one forward pass -----------------------------------------------------------------------

    def batch(self, slots: list[int], new_tokens: int) -> CacheBatch:
        """The view of a pass feeding `new_tokens` to each of `slots` (their pages reserved)."""
        device = self.keys[0].device if self.keys else self.device
        starts = [self.lengths[s] for s in slots]
        length = max(starts) + new_tokens
        count = math.ceil(length / self.page_size)
        if any(len(self.tables[s]) < math.ceil((start + new_tokens) / self.page_size) for s, start in zip(slots, starts)):
            raise RuntimeError("reserve() the pages of a pass before running it")
        pages = torch.tensor([self.tables[s][:count] + [0] * (count - len(self.tables[s][:count])) for s in slots], device=device)
        positions = torch.tensor(starts, device=device)[:, None] + torch.arange(new_tokens, device=device)
        where = (pages.gather(1, positions // self.page_size) * self.page_size + positions % self.page_size).reshape(-1)
        mask = None
        if new_tokens > 1 or len(set(starts)) > 1:
            mask = torch.arange(length, device=device)[None, None, None, :] <= positions[:, None, :, None]
        run = None
        if len(slots) == 1:
            first = self.tables[slots[0]][0]
            if self.tables[slots[0]][:count] == list(range(first, first + count)):
                run = slice(first, first + count)
        return CacheBatch(list(slots), pages, where, positions, length, mask, run)

    def layer(self, index: int, batch: CacheBatch) -> LayerCache:
        return LayerCache(self.keys[index], self.values[index], batch)

    def advance(self, slots: list[int], new_tokens: int) -> None:
        for s in slots:
            self.lengths[s] += new_tokens
