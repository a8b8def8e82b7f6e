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
