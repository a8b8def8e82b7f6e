"""Stand-in models whose outputs are known in advance, for tests of what runs around a model."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn as nn

from groklm.tokenizer.chat import reply_end_id


class Rigged(nn.Module):
    """Says "7" and ends its turn: logit 5 for "7" (after anything but "7") and for the token that
    ends a reply (ChatML's <|im_end|>, after "7"), 0 for every other token."""

    def __init__(self, tokenizer):
        super().__init__()
        # What the inference engine reads of a config; no layers, so its KV cache is empty.
        self.config = SimpleNamespace(block_size=512, vocab_size=tokenizer.vocab_size, n_layer=0, n_kv_head=1, head_dim=1)
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the harness a device to read
        self.seven, self.end, self.vocab = tokenizer.encode("7")[0], reply_end_id(tokenizer), tokenizer.vocab_size

    def forward(self, idx):
        logits = torch.zeros(*idx.shape, self.vocab)
        after_seven = (idx == self.seven).float()
        logits[..., self.seven] = 5.0 * (1 - after_seven)
        logits[..., self.end] = 5.0 * after_seven
        return logits, None

    def forward_cached(self, idx, cache, slots):
        """The engine's call: the logits depend on the newest token only, so nothing to cache."""
        cache.advance(slots, idx.size(1))
        return self(idx)[0][:, -1]


class Poisoned(nn.Module):
    """`model`, except that request `victim`'s row of logits becomes `value` from the
    `after`-th forward pass that includes it (attach it to its engine with `aim`)."""

    def __init__(self, model: nn.Module, value: float = float("nan"), after: int = 0):
        super().__init__()
        self.model, self.config = model, model.config
        self.value, self.after, self.seen = value, after, 0
        self.engine = None  # groklm.infer.engine.Engine
        self.victim: int | None = None

    def aim(self, engine, victim: int):
        """Poison request id `victim` of `engine` (which runs this model); returns the engine."""
        self.engine, self.victim = engine, victim
        return engine

    def forward_cached(self, idx, cache, slots):
        logits = self.model.forward_cached(idx, cache, slots)
        request = self.engine.active.get(self.victim) if self.engine is not None else None
        if request is not None and request.slot in slots:
            self.seen += 1
            if self.seen > self.after:
                logits = logits.clone()
                logits[slots.index(request.slot)] = self.value
        return logits
