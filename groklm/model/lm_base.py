"""What the state-space and linear-recurrence language models (mamba.py, rwkv.py, jamba.py) share:
their configs' round trip through config.json and size checks, and the language-model interface
(forward(idx, targets) -> (logits, loss), step(idx, state), num_params) around each one's own
blocks."""

from __future__ import annotations

import math
from dataclasses import asdict, fields

import torch
import torch.nn as nn

from groklm.errors import ConfigError
from groklm.model.gpt import next_token_loss


class SizedConfig:
    """A mixin for a config dataclass: to_dict / from_dict (unknown keys and wrong types are
    ConfigErrors naming the model) and check_sizes for its integer and dropout fields."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} key(s) {unknown}; known keys: {sorted(known)}")
        try:
            return cls(**values)
        except TypeError as error:
            raise ConfigError(f"bad {cls.__name__}: {error}") from error

    def check_sizes(self, names: tuple[str, ...]) -> None:
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


def init_linear_weights(module: nn.Module, n_layer: int) -> None:
    """GPT-2's init for Linear and Embedding weights (as gpt.GPT._init_weights): N(0, 0.02),
    projections into the residual stream scaled by 1/sqrt(2 n_layer). Biases are left alone:
    some carry a meaning of their own (Mamba's step sizes)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        std = 0.02 / math.sqrt(2 * n_layer) if getattr(module, "is_residual_projection", False) else 0.02
        nn.init.normal_(module.weight, mean=0.0, std=std)


class TokenLM(nn.Module):
    """token embedding -> blocks -> final norm -> LM head (tied to the embedding when
    config.tie_embeddings), with the GPT's and RecurrentLM's interface.

    A subclass calls build(config, blocks, norm_f) in its __init__. Each block's forward(x)
    (B, T, C) -> (B, T, C) is the training path (every position at once, from an empty state);
    its step(x, state) (B, C) -> ((B, C), state) the generation path, one token from a carried
    state (None: the start of a text)."""

    def build(self, config, blocks: list[nn.Module], norm_f: nn.Module) -> None:
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(blocks)
        self.norm_f = norm_f
        self.drop = nn.Dropout(config.dropout) if config.dropout else nn.Identity()
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.apply(lambda module: init_linear_weights(module, config.n_layer))
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight  # one matrix reads tokens in and writes them out

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        return self.wte(idx)

    def hidden_states(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) -> the final (normed) hidden state of every position, (B, T, n_embd)."""
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        return self.drop(self.norm_f(x))

    def step_token(self, token: torch.Tensor, state):
        """token (B,) -> (logits (B, vocab), state: one block state per layer)."""
        x, new_state = self.embed(token), []
        for block, layer_state in zip(self.blocks, state or [None] * len(self.blocks)):
            x, layer_state = block.step(x, layer_state)
            new_state.append(layer_state)
        return self.lm_head(self.drop(self.norm_f(x))), new_state

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx (B, T) -> (logits (B, T, vocab), mean next-token cross-entropy or None), every
        window starting from an empty state as every GPT window starts with an empty context."""
        logits = self.lm_head(self.hidden_states(idx))
        return logits, None if targets is None else next_token_loss(logits, targets)

    def step(self, idx: torch.Tensor, state=None):
        """Read idx (B, T) on from `state` (None: the start of a text) one token at a time
        through the recurrence -> (logits (B, T, vocab), new state): what groklm.infer.decode
        carries between tokens, so generation costs the same per token at any length."""
        logits = []
        for t in range(idx.size(1)):
            token_logits, state = self.step_token(idx[:, t], state)
            logits.append(token_logits)
        return torch.stack(logits, dim=1), state

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (a tied embedding / head once); non_embedding leaves out the table."""
        total = sum(p.numel() for p in self.parameters())
        return total - self.wte.weight.numel() if non_embedding else total
