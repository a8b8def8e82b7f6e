"""Mixture of depths (Raposo et al. 2024): a block that only some tokens pass through.

A dense transformer spends the same compute on every token at every layer. A routed block
lets a router pick which tokens it processes; the others skip it on the residual stream:

    score   = router(x)                                  one number per token (a Linear, n_embd -> 1)
    chosen  = the top k = capacity * T scores of each sequence, kept in their original order
    x'      = x + sigmoid(score) * (block(x_chosen) - x_chosen)     for chosen tokens
    x'      = x                                                     for the others, untouched

The chosen tokens go through the block as a shorter sequence: attention stays causal among
them (they keep their order) and RoPE turns them by their original positions, so a chosen
token sees the chosen tokens before it and nothing else. Its output is scaled by
sigmoid(score), which puts the router on the loss's gradient path (a top-k choice alone has
no gradient). With k = T/8 and every other block routed (the paper's setting, mod_every=2),
those blocks cost about 1/8 of their matmuls and 1/64 of their attention.

The top-k looks at the whole sequence, future tokens included: fine for training, where every
position is computed at once, but a generating model cannot know whether a token would be in
the top k of a sequence it has not seen yet. So each routed block also trains a *predictor*
(a Linear, n_embd -> 1, on the block's input detached from the rest of the model): a causal
guess of whether the token is in the top k, learned with binary cross-entropy against the
top-k membership, its loss added to the training loss (predictor_loss). Which rule routes:

    model.training, no cache   the top k of the router's scores, per sequence (exactly k tokens)
    eval, no cache             the predictor: a token is routed where its logit > 0
    forward_cached (KV cache)  the predictor, as in eval (generation is always causal)

so the eval forward and cached generation make the same decisions token by token, and a
sequence may route more or fewer than k tokens at inference. (An uncached batch pads every row
to the most tokens any row routes, so it computes a little more than the tokens routed.)

What the KV cache holds for a skipped token: in a routed layer, an all-zero key and value.
A routed token reads the layer's cache with every all-zero key masked out (SkipAwareCache),
so later tokens do not see skipped ones in that layer, as in training, where routed tokens
attend only to routed tokens. (A computed key is never exactly zero in every component, so
the zero key is a safe mark; it keeps the cache's pages, prefix sharing and byte budget as they
are for a dense model.)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from groklm.errors import ConfigError
from groklm.model.config import GPTConfig
from groklm.model.kv_cache import LayerCache

# Weight of the predictors' loss in the training loss. Their input is detached, so it trains only
# them; small, so its gradient hardly counts against the model's in gradient clipping.
PREDICTOR_LOSS_WEIGHT = 0.01


def routed_count(capacity: float, seq_len: int) -> int:
    """Tokens of a sequence of seq_len a routed block takes in training: capacity * seq_len, at least one."""
    return max(1, round(capacity * seq_len))


class DepthRouter(nn.Module):
    """Wraps one Block: (B, T, C) -> (B, T, C), the block applied to the routed tokens only.
    Called like a Block (x, positions, mask, cache). After a training forward, `aux_loss` holds
    the predictor's binary cross-entropy (with gradient to the predictor only)."""

    def __init__(self, config: GPTConfig, block: nn.Module):
        super().__init__()
        self.capacity = config.mod_capacity
        self.block = block
        self.router = nn.Linear(config.n_embd, 1, bias=False)
        self.predictor = nn.Linear(config.n_embd, 1)
        self.aux_loss = None

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                return_weights: bool = False, cache: LayerCache | None = None) -> torch.Tensor:
        if return_weights:
            raise ConfigError("attention maps are drawn for dense GPTs; a mixture-of-depths block attends over "
                              "a different subset of tokens for every sequence")
        B, T, _ = x.shape
        scores = self.router(x).squeeze(-1)  # (B, T)
        if cache is not None:
            return self.forward_cached(x, scores, cache)
        if positions is None:
            positions = torch.arange(T, device=x.device).expand(B, T)
        if self.training:
            top = scores.topk(routed_count(self.capacity, T), dim=1).indices
            chosen = torch.zeros_like(scores, dtype=torch.bool).scatter(1, top, True)
            guess = self.predictor(x.detach()).squeeze(-1)
            self.aux_loss = F.binary_cross_entropy_with_logits(guess.float(), chosen.float())
        else:
            chosen = self.predictor(x).squeeze(-1) > 0
        index, valid = in_order(chosen)
        if index.size(1) == 0:  # nothing routed anywhere in the batch
            return x
        if mask is not None:
            mask = routed_mask(mask, index, valid)
        return self.apply_block(x, scores, index, valid, positions.gather(1, index), mask)

    def apply_block(self, x: torch.Tensor, scores: torch.Tensor, index: torch.Tensor, valid: torch.Tensor,
                    positions: torch.Tensor, mask: torch.Tensor | None = None, cache=None) -> torch.Tensor:
        """Run the block on the tokens x[b, index[b]] (where `valid`) and add their gated deltas back."""
        index_c = index[..., None].expand(-1, -1, x.size(-1))
        picked = x.gather(1, index_c)
        delta = self.block(picked, positions, mask, cache=cache) - picked
        gate = torch.sigmoid(scores.gather(1, index))[..., None].to(delta.dtype)
        update = torch.where(valid[..., None], delta * gate, torch.zeros_like(delta))
        return x.scatter_add(1, index_c, update)

    def forward_cached(self, x: torch.Tensor, scores: torch.Tensor, cache: LayerCache) -> torch.Tensor:
        """The new tokens x (B, T, C) of a cached pass: the routed ones go through the block over the
        layer's cache; the skipped ones are stored as all-zero keys and values."""
        batch = cache.batch
        B, T, _ = x.shape
        chosen = self.predictor(x).squeeze(-1) > 0
        where = batch.where.view(B, T)
        skipped = where[~chosen]
        for store in (cache.keys, cache.values):
            store.view(-1, *store.shape[2:]).index_fill_(0, skipped, 0.0)
        counts = chosen.sum(dim=1)
        # Rows with the same number of routed tokens go through together (no padding: a padded
        # token would write a key somewhere). A decode step (T = 1) is at most one group.
        for count in counts.unique().tolist():
            if count == 0:
                continue
            rows = (counts == count).nonzero().squeeze(1)
            index, _ = in_order(chosen[rows])
            positions = batch.positions[rows].gather(1, index)
            length = torch.arange(batch.length, device=x.device)
            routed = replace(batch, slots=[batch.slots[r] for r in rows.tolist()], pages=batch.pages[rows],
                             where=where[rows].gather(1, index).reshape(-1), positions=positions,
                             mask=length[None, None, None, :] <= positions[:, None, :, None])
            # (batch.run, one row's pages read in place, is set only for a one-row batch: that row.)
            layer = SkipAwareCache(LayerCache(cache.keys, cache.values, routed))
            valid = torch.ones_like(index, dtype=torch.bool)
            x = x.index_copy(0, rows, self.apply_block(x[rows], scores[rows], index, valid, positions, cache=layer))
        return x


def in_order(chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """chosen (B, T) bool -> (index (B, K), valid (B, K)): each row's chosen positions in order,
    K the most any row has; shorter rows are padded with unchosen positions (valid False).
    Padding sits after a row's chosen tokens, so causal attention keeps it out of their sight."""
    T = chosen.size(1)
    order = torch.arange(T, device=chosen.device)
    index = torch.where(chosen, order, order + T).argsort(dim=1)[:, : int(chosen.sum(dim=1).max())]
    return index, chosen.gather(1, index)


def routed_mask(mask: torch.Tensor, index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """A packed row's (B, 1, T, T) "may attend" matrix cut down to the tokens `index` (B, K), padding
    hidden: padding may stand for a token earlier than a routed one, so the order alone does not hide
    it here. Each token may still attend to itself (a padded one would otherwise see nothing: NaN)."""
    K = index.size(1)
    rows = mask.gather(2, index[:, None, :, None].expand(-1, 1, -1, mask.size(-1)))
    cut = rows.gather(3, index[:, None, None, :].expand(-1, 1, K, -1))
    itself = torch.eye(K, dtype=torch.bool, device=mask.device)
    return cut & valid[:, None, None, :] | itself


@dataclass
class SkipAwareCache:
    """A routed layer's cache as attention reads it: every position holding an all-zero key (a
    token that skipped this layer) is masked out, on top of the cache's own mask."""

    layer: LayerCache

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        keys, values, mask = self.layer.update(k, v)
        held = keys.ne(0).any(dim=-1).any(dim=1)  # (B, L): positions whose token went through this layer
        return keys, values, mask & held[:, None, None, :]


def depth_routers(model: nn.Module) -> list[DepthRouter]:
    return [m for m in model.modules() if isinstance(m, DepthRouter)]


def predictor_loss(model: nn.Module) -> torch.Tensor:
    """PREDICTOR_LOSS_WEIGHT times the mean predictor loss of the model's routed blocks in its last training forward."""
    return PREDICTOR_LOSS_WEIGHT * torch.stack([layer.aux_loss for layer in depth_routers(model)]).mean()
