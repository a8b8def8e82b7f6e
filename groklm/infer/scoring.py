"""Scoring: how likely a model finds given token sequences (no sampling).

    prompt + response rows ──► one right-padded batch ──► one forward pass ──► log p of each token

        sequence   [p p p p r r r <|im_end|> 0 0]   prompt, response, right padding
        mask       [0 0 0 1 1 1 1     0      0 0]   position t is True when token t+1 is a response token

Every per-token quantity lives on the T-1 "next token" positions: position t holds what the
model said about token t+1, so the mask above is aligned with the logits. Right padding never
changes earlier positions (attention is causal), so one forward pass scores every row at once.
Multiple-choice evaluation, the local backend's `score`, the KL of sampled answers and PPO all
read their log-probabilities from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from groklm.tokenizer.chat import render_prompt, reply_ids


@dataclass
class ResponseBatch:
    sequences: torch.Tensor  # (N, T) prompt + response ids, right-padded with 0
    mask: torch.Tensor  # (N, T-1) bool: position t predicts a response token
    responses: list[list[int]]  # each row's response ids (the stop token included, if reached)

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(dim=1)


def pack_responses(prompts: list[list[int]], responses: list[list[int]], block_size: int) -> ResponseBatch:
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
    return ResponseBatch(sequences, mask, [list(r) for r in responses])


def token_logprobs(logits: torch.Tensor, sequences: torch.Tensor) -> torch.Tensor:
    """logits (N, T, V) of sequences (N, T) -> log p(token t+1 | tokens <= t), shape (N, T-1)."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, sequences[:, 1:, None]).squeeze(-1)


def choice_logprobs(model, tokenizer, messages: list[dict], choices: list[str]) -> torch.Tensor:
    """log p(choice as the assistant's whole reply | messages) for each choice: a (len(choices),)
    tensor. The stop token that closes the reply (ChatML's <|im_end|>) counts too, so "1" is not
    rewarded for being the start of "12". Each reply is tokenized as the chat format writes it."""
    prompt = render_prompt(tokenizer, messages)
    replies = [reply_ids(tokenizer, messages, c) for c in choices]
    batch = pack_responses([prompt] * len(choices), replies, model.config.block_size)
    device = next(model.parameters()).device
    seqs, mask = batch.sequences.to(device), batch.mask.to(device)
    with torch.no_grad():
        logits, _ = model(seqs)
    return (token_logprobs(logits, seqs) * mask).sum(dim=1).cpu()
