"""RL maths over the per-token quantities of a rollout: every (N, T-1) tensor here lives on the
"next token" positions of the packed prompt + response rows (see groklm.infer.scoring), masked
to the response tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each next-token distribution, (N, T-1): how much the policy still explores."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalized advantage estimation over (N, T) per-token rewards and values.

    Outside the mask, rewards and values are zero, so the state after the last response token
    is worth 0 (the episode ended) and padding contributes nothing. Returns (advantages, returns)."""
    mask = mask.to(rewards.dtype)
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    T = rewards.size(1)
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    return advantages * mask, (advantages + values) * mask


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalise to mean 0, std 1 over the masked entries (keeps the step size independent of the reward's scale)."""
    mean = masked_mean(x, mask)
    std = masked_mean((x - mean) ** 2, mask).sqrt()
    return (x - mean) / (std + eps) * mask


def policy_loss(logp, old_logp, advantages, mask, clip_eps: float):
    """The clipped surrogate: mean over response tokens of max(-ratio A, -clip(ratio) A).
    Returns (loss, clip fraction: the share of tokens where the clipped term was the larger)."""
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_eps, 1 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    return loss, masked_mean((clipped > unclipped).float(), mask)


def value_loss(values, old_values, returns, mask, clip: float):
    """0.5 (V - R)^2, pessimistically clipped like the policy: the new value may not profit from
    moving more than `clip` away from the value at rollout time."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi || pi_ref) estimate from a sample of pi: r - log r - 1 with r = pi_ref / pi."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1


def group_advantages(scores: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """GRPO: scores (N,) in consecutive groups of group_size -> (score - group mean) / (group std + eps)."""
    groups = scores.view(-1, group_size)
    mean, std = groups.mean(dim=1, keepdim=True), groups.std(dim=1, keepdim=True)
    return ((groups - mean) / (std + eps)).reshape(-1)
