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



@dataclass
class Rollout:
    sequences: torch.Tensor  # (N, T) prompt + response ids, right-padded with 0
    mask: torch.Tensor  # (N, T-1) bool: position t predicts a response token
    responses: list[list[int]]  # each row's response ids (the stop token included, if reached)

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(dim=1)


def sample_responses(
    model,
    tokenizer,
    prompts: list[list[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """One answer per prompt (repeat a prompt for several answers), sampled side by side by the
    inference engine (KV cache, batched decoding); temperature 0 is greedy.

    Each answer ends at a stop token (kept in the answer) or after max_new_tokens. A prompt is
    cut to its last block_size - max_new_tokens tokens so the answer fits. `generator` draws
    each answer's seed, so a seeded run samples the same answers again (e.g. after resume)."""
    from groklm.infer.engine import Engine, SamplingParams

    keep = max(1, model.config.block_size - max_new_tokens)
    seeds = torch.randint(2**62, (len(prompts),), generator=generator).tolist()
    params = [SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_k=top_k, seed=s) for s in seeds]
    engine = Engine(model, tokenizer, max_batch=min(len(prompts), 64))
    return [c.token_ids for c in engine.generate([p[-keep:] for p in prompts], params)]


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
