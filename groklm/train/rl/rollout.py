"""One RL step's experience: the policy answers its prompts, the reward grades the answers, and
every answer token gets its log-probs (policy and reference) and its advantage.

Log-probs are recomputed with a full forward pass after sampling, not collected while sampling:
then the "old" log-probs of PPO's ratio come from exactly the computation the update uses, and
the ratio is exactly 1 before the first update.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from groklm.infer.engine import sample_responses
from groklm.infer.scoring import pack_responses, token_logprobs
from groklm.tokenizer.chat import render_prompt, stop_ids
from groklm.train.rl.config import RLConfig
from groklm.train.rl.objectives import gae, group_advantages, whiten
from groklm.train.rl.policy import PolicyWithValue
from groklm.train.rl.rewards import RewardFn


@dataclass
class Experience:
    """One rollout, ready to learn from (all per-token tensors are (N, T-1))."""

    sequences: torch.Tensor
    mask: torch.Tensor
    old_logp: torch.Tensor
    ref_logp: torch.Tensor
    advantages: torch.Tensor
    old_values: torch.Tensor | None
    returns: torch.Tensor | None
    stats: dict[str, float]


@torch.no_grad()
def collect(model: PolicyWithValue, ref, tokenizer, records, reward_fn: RewardFn, cfg: RLConfig, generator) -> Experience:
    """Rollout + scoring + advantages for one step (of this process's share of the prompts)."""
    stop = stop_ids(tokenizer)
    device = next(model.parameters()).device
    model.eval()
    G = cfg.answers_per_prompt
    prompts, graded = [], []
    keep = max(1, model.config.block_size - cfg.max_new_tokens)  # the context the sampler sees, and training too
    for record in records:
        prompts += [render_prompt(tokenizer, record["prompt"])[-keep:]] * G
        graded += [record] * G
    responses = sample_responses(model.policy, tokenizer, prompts, cfg.max_new_tokens, cfg.temperature, generator=generator)
    rollout = pack_responses(prompts, responses, model.config.block_size)
    # (ids past the tokenizer's vocabulary are rows of a padded embedding: no text)
    texts = [tokenizer.decode([t for t in r if t not in stop and t < tokenizer.vocab_size]) for r in responses]
    scores = torch.tensor(reward_fn(graded, texts), dtype=torch.float32, device=device).view(-1)
    seqs, mask = rollout.sequences.to(device), rollout.mask.to(device)

    logits, values = model(seqs)
    old_logp = token_logprobs(logits / cfg.temperature, seqs)
    ref_logp = token_logprobs(ref(seqs)[0] / cfg.temperature, seqs)
    kl = (old_logp - ref_logp) * mask  # log pi/pi_ref of each sampled token: summed, the sequence's KL
    stats = {"score": scores.mean().item(), "kl": kl.sum(dim=1).mean().item(),
             "response_len": mask.sum(dim=1).float().mean().item()}
    if cfg.algo == "ppo":
        rewards = -cfg.kl_coef * kl
        last = (mask * torch.arange(mask.size(1), device=device)).argmax(dim=1)  # each answer's last token
        rewards[torch.arange(len(scores), device=device), last] += scores
        old_values = values[:, :-1] * mask
        advantages, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
        advantages = whiten(advantages, mask)
    else:
        advantages = group_advantages(scores, G)[:, None] * mask
        old_values = returns = None
    model.train()
    return Experience(seqs, mask, old_logp, ref_logp, advantages, old_values, returns, stats)
