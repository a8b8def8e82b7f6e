"""The model RL trains: the GPT policy, plus (for ppo) a value head reading the same hidden states."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from groklm.model.lora import lora_disabled


class PolicyWithValue(nn.Module):
    """Sharing the trunk is cheap and lets the value head reuse what the policy knows;
    InstructGPT used a separate value model, which costs a second network."""

    def __init__(self, policy: nn.Module, with_value: bool = True):
        super().__init__()
        self.policy = policy
        self.value_head = nn.Linear(policy.config.n_embd, 1) if with_value else None
        if self.value_head is not None:  # start by predicting 0: no false confidence
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)

    @property
    def config(self):
        return self.policy.config

    def forward(self, idx: torch.Tensor):
        """idx (N, T) -> (logits (N, T, V), values (N, T) or None)."""
        hidden = self.policy.hidden_states(idx)
        values = self.value_head(hidden).squeeze(-1).float() if self.value_head is not None else None
        return self.policy.lm_head(hidden), values


def lora_reference(policy: nn.Module) -> Callable[[torch.Tensor], tuple]:
    """The reference model of a LoRA policy: the policy itself with its adapters switched off,
    which computes exactly what the source run does (the base weights are frozen), without a
    second copy of them. Called like a model: reference(idx) -> the policy's outputs."""
    def reference(idx: torch.Tensor):
        with lora_disabled(policy):
            return policy(idx)

    return reference
