"""Mixture of experts (MoE): many MLPs per block, each token routed to a few of them.

    probs   = softmax(router(x))                     one probability per expert, per token
    chosen  = the top_k experts of each token        (its "assignments")
    y       = sum over chosen e of probs[e] * expert_e(x)

A dense MLP spends every parameter on every token. With E experts and top-k routing a block
holds E MLPs but runs only k per token: parameters (capacity to store knowledge) grow E-fold
while the compute per token (the "active" parameters) grows k-fold. The gate is the raw router
probability, not renormalised over the chosen k, so the language-model loss also teaches the
router (with k=1 a renormalised gate would always be 1 and carry no gradient).

Two problems come with routing, and two standard fixes:
  * Collapse: a router that favours one expert trains that expert more, so it is favoured
    more. The load-balancing loss (Switch Transformer) E * sum_e f_e * P_e, with f_e the share
    of assignments expert e receives and P_e its mean router probability, is 1 when the load
    is even and grows as it concentrates; it is added (times moe_aux_weight) while training.
  * Hot spots: batched hardware wants a fixed amount of work per expert. Each expert takes at
    most `capacity` = ceil(capacity_factor * k * N / E) of the N * k assignments; the rest are
    dropped (that expert adds nothing for the token; the residual stream still carries it).
    Queues fill in token order (rows of the batch one after another, positions in order), so
    whether a token is dropped depends only on tokens before it, never on later positions of
    its own sequence: filling all first choices before any second choice (as some MoEs do)
    would let a later token push out an earlier one's second choice, a peek at the future
    that a causal language model must not have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from groklm.model.config import GPTConfig


@dataclass
class Routing:
    """Where each of the N * k assignments goes, listed token by token: token 0's k choices
    (best first), then token 1's, ..."""

    expert: torch.Tensor  # (k*N,) the expert of each assignment
    token: torch.Tensor  # (k*N,) the token it belongs to
    gate: torch.Tensor  # (k*N,) the router probability: the weight of that expert's output
    keep: torch.Tensor  # (k*N,) bool: it fits in its expert's capacity
    probs: torch.Tensor  # (N, E) the whole router distribution (for the balancing loss)


def expert_capacity(n_tokens: int, n_experts: int, top_k: int, factor: float) -> int | None:
    """Assignments one expert accepts: `factor` times an even share; None (no limit) for factor 0."""
    if factor == 0:
        return None
    return math.ceil(factor * top_k * n_tokens / n_experts)


def route(logits: torch.Tensor, top_k: int, capacity: int | None) -> Routing:
    """Router logits (N, E) -> each token's top_k experts, their gates, and which ones fit."""
    N, E = logits.shape
    probs = logits.float().softmax(dim=-1)
    gates, experts = probs.topk(top_k, dim=-1)  # (N, k), distinct experts per token
    expert, gate = experts.reshape(-1), gates.reshape(-1)
    token = torch.arange(N, device=logits.device).repeat_interleave(top_k)
    if capacity is None:
        keep = torch.ones_like(expert, dtype=torch.bool)
    else:
        # An assignment's place in its expert's queue: how many earlier ones chose that expert.
        one_hot = F.one_hot(expert, E)
        place = (one_hot.cumsum(dim=0) * one_hot).sum(dim=-1) - 1
        keep = place < capacity
    return Routing(expert, token, gate, keep, probs)


def balancing_loss(routing: Routing) -> torch.Tensor:
    """E * sum_e f_e * P_e: 1.0 for a perfectly even router, up to E when all goes to one expert.
    f_e (a count) has no gradient; P_e does, and pushing it down where f_e is large evens the load."""
    E = routing.probs.size(-1)
    share = torch.bincount(routing.expert, minlength=E).float() / routing.expert.numel()
    return E * (share * routing.probs.mean(dim=0)).sum()


class MoE(nn.Module):
    """A drop-in for a block's MLP: (B, T, C) -> (B, T, C). `make_expert()` builds one expert
    (the block's own MLP class), so any MLP flavour (gelu, swiglu) can be an expert.

    After each forward the module keeps, for the trainer: `aux_loss` (the balancing loss, with
    gradient), `load` (E,) the share of assignments each expert was chosen for, and `dropped`,
    the share of assignments over capacity (both detached)."""

    def __init__(self, config: GPTConfig, make_expert: Callable[[], nn.Module]):
        super().__init__()
        self.top_k, self.capacity_factor = config.moe_top_k, config.moe_capacity_factor
        self.router = nn.Linear(config.n_embd, config.moe_experts, bias=False)
        self.experts = nn.ModuleList(make_expert() for _ in range(config.moe_experts))
        self.aux_loss = self.load = self.dropped = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.reshape(-1, x.size(-1))  # routing is per token: batch and time flatten together
        capacity = expert_capacity(len(tokens), len(self.experts), self.top_k, self.capacity_factor)
        routing = route(self.router(tokens), self.top_k, capacity)
        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            mine = (routing.expert == e) & routing.keep
            if mine.any():
                index = routing.token[mine]
                out.index_add_(0, index, expert(tokens[index]) * routing.gate[mine, None].to(x.dtype))
        self.aux_loss = balancing_loss(routing)
        self.load = torch.bincount(routing.expert, minlength=len(self.experts)).float().detach() / routing.expert.numel()
        self.dropped = 1.0 - routing.keep.float().mean().detach()
        return out.view_as(x)


def moe_layers(model: nn.Module) -> list[MoE]:
    return [m for m in model.modules() if isinstance(m, MoE)]


def moe_aux_loss(model: nn.Module) -> torch.Tensor:
    """The mean balancing loss of the model's MoE layers in its last forward pass."""
    layers = moe_layers(model)
    return torch.stack([layer.aux_loss for layer in layers]).mean()


def moe_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    """Expert utilisation of the last forward pass, averaged over layers, for metrics.jsonl:
    moe_aux (balancing loss), moe_dropped (share over capacity), moe_load_<e> (share routed to e)."""
    layers = moe_layers(model)
    stats = {"moe_aux": moe_aux_loss(model).detach(),
             "moe_dropped": torch.stack([layer.dropped for layer in layers]).mean()}
    load = torch.stack([layer.load for layer in layers]).mean(dim=0)
    stats.update({f"moe_load_{e}": share for e, share in enumerate(load)})
    return stats


def moe_loss(model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The training loop's loss_fn for a MoE GPT: next-token loss (which includes the balancing
    term while training), plus the utilisation stats."""
    _, loss = model(*batch)
    return loss, moe_stats(model)


def active_params(model: nn.Module) -> int:
    """Parameters one token passes through: all of them, less the experts it is not routed to."""
    total = sum(p.numel() for p in model.parameters())
    for layer in moe_layers(model):
        per_expert = sum(p.numel() for p in layer.experts[0].parameters())
        total -= (len(layer.experts) - layer.top_k) * per_expert
    return total
