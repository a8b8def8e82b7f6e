"""Choosing the next token from the model's logits.

temperature rescales the logits (T -> 0 approaches greedy, T > 1 flattens the distribution);
top_k keeps only the k most likely tokens; top_p keeps the smallest set of tokens whose
probabilities add up to p ("nucleus" sampling). A seeded generator makes a draw repeatable.

Every legal setting is safe, however extreme: the logits are shifted so the best one is 0
before dividing by the temperature, so a temperature of 1e-300 sends every worse token to
-inf (greedy, ties shared) instead of overflowing into NaN; and the most likely token
always survives top_p, however small p is. Logits that are not numbers (NaN, +inf, or no token
allowed at all) are the model's or the caller's failure, never sampled: `NonFiniteLogits`.
"""

from __future__ import annotations

import math

import torch

from groklm.errors import ConfigError, GroklmError


class NonFiniteLogits(GroklmError):
    """The logits of a step hold NaN or +inf, or allow no token: nothing can be sampled."""


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if temperature < 0:
        raise ConfigError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p}")


def best_logits(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's highest logit and its token, (B, 1) each; NonFiniteLogits for a row that is not
    numbers (-inf marks a forbidden token). One pass checks it all: max propagates NaN, a +inf
    anywhere is the row's max, and a row that allows nothing has -inf as its max."""
    best, ids = logits.max(dim=-1, keepdim=True)
    if not all(map(math.isfinite, best.view(-1).tolist())):  # B numbers: cheaper on the host than a tensor op
        if bool(torch.isneginf(best).any()) and not bool(torch.isnan(best).any() or torch.isposinf(best).any()):
            raise NonFiniteLogits("no token is allowed at this step (every logit is -inf): the constraint or the "
                                  "filters left nothing to sample")
        raise NonFiniteLogits("the model's logits are not finite numbers (NaN or +inf) at this step: the weights "
                              "may be corrupt, or overflow in a low-precision dtype (try float32)")
    return best, ids


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set the logits of tokens outside the top-k / top-p set to -inf. logits: (B, V)."""
    if top_k is not None and top_k < logits.size(-1):
        kth_best = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the tokens strictly more likely than it already cover top_p. The
        # most likely token always survives: with a p below float precision (1e-300) the
        # comparison alone would drop it too and leave nothing.
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop_sorted[..., 0] = False
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits: (B, V) of the last position -> next token ids (B, 1). temperature 0 is greedy."""
    best, best_ids = best_logits(logits)
    if temperature == 0:
        return best_ids
    # With the best logit at 0, dividing can only send the others towards -inf, never to NaN. A
    # temperature below float32's smallest number (1e-300) would round to 0 there, and 0/0 is
    # NaN: such a one divides in float64, which holds it.
    dtype = torch.float32 if temperature >= torch.finfo(torch.float32).tiny else torch.float64
    logits = (logits.to(dtype) - best.to(dtype)) / temperature
    probs = filter_logits(logits, top_k, top_p).softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)
