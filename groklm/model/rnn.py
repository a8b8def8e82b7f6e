"""Recurrent language models: the Elman RNN (written out step by step), LSTM and GRU.

    token ids -> embedding -> n_layer recurrent layers -> LM head (tied to the embedding)

A recurrent layer reads the sequence one position at a time and keeps everything it knows
about the past in one fixed-size vector, the hidden state h:

    Elman:  h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

Two limits follow, and they are why transformers replaced RNNs:
  * Forgetting. Whatever the model needs from token 1 must survive t squashings through
    W_hh and tanh; the gradient back to it is a product of t Jacobians, which shrinks (or
    blows up) geometrically. LSTM and GRU add gates that let information (and gradient) pass
    through many steps nearly unchanged, which helps but does not remove the bottleneck:
    the past still has to fit in h.
  * Sequential compute. h_t needs h_{t-1}, so training runs T small steps one after another,
    where a transformer runs all T positions at once as large matrix products.

Generation, on the other hand, is cheap: each new token costs one step and the state is a few
vectors, whatever the length so far (a transformer re-reads, or caches, every earlier token).
The reference decoder (groklm.infer.decode) generates this way, through `step`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from groklm.errors import ConfigError
from groklm.model.gpt import next_token_loss

CELLS = ("rnn", "lstm", "gru")


@dataclass
class RNNConfig:
    vocab_size: int = 8192
    block_size: int = 256  # the window trained on; generation can run past it
    n_layer: int = 2
    n_embd: int = 256  # embedding width, which is also the hidden state's size (so the head can be tied)
    dropout: float = 0.0  # between layers, as torch.nn.RNN/LSTM/GRU apply it, and before the head
    cell: str = "lstm"  # rnn (Elman, tanh) | lstm | gru

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ConfigError(f"cell must be one of {', '.join(CELLS)}; got {self.cell!r}")
        for name in ("vocab_size", "block_size", "n_layer", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "RNNConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown RNN config key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**values)


class ElmanRNN(nn.Module):
    """A multi-layer tanh RNN, one time step at a time, with torch.nn.RNN's parameter names,
    shapes, initialisation and (batch_first) interface, so either can load the other's weights."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.hidden_size, self.num_layers, self.dropout = hidden_size, num_layers, dropout
        bound = 1.0 / math.sqrt(hidden_size)
        for layer in range(num_layers):
            width = input_size if layer == 0 else hidden_size
            shapes = {"weight_ih": (hidden_size, width), "weight_hh": (hidden_size, hidden_size),
                      "bias_ih": (hidden_size,), "bias_hh": (hidden_size,)}
            for name, shape in shapes.items():
                self.register_parameter(f"{name}_l{layer}", nn.Parameter(torch.empty(shape).uniform_(-bound, bound)))

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, input_size), h0: (num_layers, B, H) or None (zeros)
        -> (the last layer's h_t for every t (B, T, H), every layer's final h (num_layers, B, H))."""
        B, T, _ = x.shape
        if h0 is None:
            h0 = x.new_zeros(self.num_layers, B, self.hidden_size)
        finals = []
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = (getattr(self, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            if layer > 0:
                x = F.dropout(x, self.dropout, self.training)
            # The input's contribution does not depend on the past: all T at once, one matmul.
            from_input = F.linear(x, w_ih, b_ih)
            h, outputs = h0[layer], []
            for t in range(T):  # the recurrence itself cannot be parallelised over time
                h = torch.tanh(from_input[:, t] + F.linear(h, w_hh, b_hh))
                outputs.append(h)
            x = torch.stack(outputs, dim=1)
            finals.append(h)
        return x, torch.stack(finals)


def make_recurrent(config: RNNConfig) -> nn.Module:
    size, layers, dropout = config.n_embd, config.n_layer, config.dropout
    if config.cell == "rnn":
        return ElmanRNN(size, size, layers, dropout)
    torch_cell = nn.LSTM if config.cell == "lstm" else nn.GRU  # fused C++ loops: the fast way to run them
    return torch_cell(size, size, layers, dropout=dropout if layers > 1 else 0.0, batch_first=True)


class RecurrentLM(nn.Module):
    """An RNN language model with the GPT's interface: forward(idx, targets) -> (logits, loss),
    num_params; and step(idx, state) to carry the state across calls. The state is (h) for
    rnn/gru and (h, c) for lstm."""

    def __init__(self, config: RNNConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        # The table is both input and output: 1/sqrt(n_embd) makes the inputs large enough to move
        # the state and keeps the initial logits (state . row, |state| <= sqrt(n_embd)) near unit size.
        nn.init.normal_(self.wte.weight, mean=0.0, std=config.n_embd**-0.5)
        self.drop = nn.Dropout(config.dropout)
        self.rnn = make_recurrent(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # one matrix reads tokens in and writes them out

    def step(self, idx: torch.Tensor, state=None):
        """Read idx (B, T) on from `state` (None: the start of a text) -> (logits (B, T, vocab), new state)."""
        hidden, state = self.rnn(self.drop(self.wte(idx)), state)
        return self.lm_head(self.drop(hidden)), state

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """Like GPT.forward: (logits, mean next-token cross-entropy or None). Every window starts
        from a zero state, as every GPT window starts with an empty context."""
        logits, _ = self.step(idx)
        loss = None
        if targets is not None:
            loss = next_token_loss(logits, targets)
        return logits, loss

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (the tied embedding / head once); non_embedding leaves out the table."""
        total = sum(p.numel() for p in self.parameters())
        return total - self.wte.weight.numel() if non_embedding else total
