"""Rollouts: let the policy answer prompts, and keep what RL needs to learn from the answers.

    prompt ids ──► sample until a stop token or max_new_tokens ──► one row per answer:

        sequence   [p p p p r r r <|im_end|> 0 0]   prompt, response, right padding
        mask       [0 0 0 1 1 1 1     0      0 0]   position t is True when token t+1 is a response token

Every per-token quantity (log-probs, values, rewards, advantages) lives on the T-1 "next
token" positions: position t holds what the model said about token t+1, so the mask above is
aligned with the logits. Right padding never changes earlier positions (attention is
causal), so one forward pass over the padded batch scores every row at once.

Log-probs are recomputed with a full forward pass after sampling, not collected while
sampling: then the "old" log-probs of PPO's ratio come from exactly the computation the
update uses, and the ratio is exactly 1 before the first update.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from groklm.infer.sampling import sample_next


@dataclass
class Rollout:
    sequences: torch.Tensor  # (N, T) prompt + response ids, right-padded with 0
    mask: torch.Tensor  # (N, T-1) bool: position t predicts a response token
    responses: list[list[int]]  # each row's response ids (the stop token included, if reached)

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(dim=1)


@torch.no_grad()
def sample_responses(
    model,
    prompt: list[int],
    n: int,
    max_new_tokens: int,
    stop: set[int],
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """n answers to one prompt, sampled side by side (temperature 0: greedy).

    A row that has produced a stop token is finished; the batch stops when every row is.
    The prompt is cut to its last block_size - max_new_tokens tokens so the answer fits."""
    device = next(model.parameters()).device
    keep = max(1, model.config.block_size - max_new_tokens)
    idx = torch.tensor([prompt[-keep:]] * n, dtype=torch.long, device=device)
    responses: list[list[int]] = [[] for _ in range(n)]
    done = [False] * n
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -model.config.block_size :])
        next_ids = sample_next(logits[:, -1, :], temperature, top_k, None, generator)
        idx = torch.cat([idx, next_ids], dim=1)
        for row, token in enumerate(next_ids[:, 0].tolist()):
            if not done[row]:
                responses[row].append(token)
                done[row] = token in stop
        if all(done):
            break
    return responses


def pack(prompts: list[list[int]], responses: list[list[int]], block_size: int) -> Rollout:
    """Right-pad prompt + response rows into one batch; prompts are cut from the left to fit."""
    rows, starts = [], []
    for prompt, response in zip(prompts, responses):
        prompt = prompt[-max(1, block_size - len(response)) :]
        rows.append(prompt + response)
        starts.append(len(prompt))
    T = max(len(r) for r in rows)
    sequences = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T - 1, dtype=torch.bool)
    for i, (row, start) in enumerate(zip(rows, starts)):
        sequences[i, : len(row)] = torch.tensor(row)
        mask[i, start - 1 : len(row) - 1] = True  # positions start-1 .. len-2 predict the response
    return Rollout(sequences, mask, [list(r) for r in responses])


def token_logprobs(logits: torch.Tensor, sequences: torch.Tensor) -> torch.Tensor:
    """logits (N, T, V) of sequences (N, T) -> log p(token t+1 | tokens <= t), shape (N, T-1)."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, sequences[:, 1:, None]).squeeze(-1)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each next-token distribution, (N, T-1): how much the policy still explores."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1)
