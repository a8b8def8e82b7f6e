"""A Mamba-style language model: a selective state-space model in place of attention.

    token ids -> embedding -> n_layer x (x + Mamba(norm(x))) -> norm -> LM head

Each channel d of the mixer carries a state of d_state numbers, updated at every position:

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t        (per channel, per state entry)
    y_t = C_t . h_t + D * u_t

A = -exp(A_log) < 0 makes the state decay; delta_t (a step size, softplus > 0), B_t and C_t are
computed from the input at t. That selectivity is the point: a large delta resets the state
onto the current token, a small one lets the token pass by, so the model chooses per token what
to remember, where a linear time-invariant SSM (fixed delta, B, C) could only apply one fixed
filter. Around the SSM: a projection to the inner width (expand * n_embd) and a gate z, a short
causal depthwise convolution over the last d_conv positions, SiLU, and the gate SiLU(z).

Two paths compute the same function. Training computes the input-dependent a_t = exp(delta_t A)
and b_t = delta_t B_t u_t of every position at once, then runs the linear recurrence
h_t = a_t h_{t-1} + b_t over the whole batch (`linear_scan`: a loop over T on a CPU, a doubling
scan of log2(T) rounds on an accelerator), with only products of decays in (0, 1]: nothing can
overflow. It keeps every h_t, (B, T, inner, d_state): d_state times the activations around it,
which the Mamba paper's fused kernel avoids by holding h in on-chip memory; that, more than the
arithmetic, is why this trains slower than a GPT of the same size. Generation
(`MambaMixer.step`) updates h and the convolution's last inputs once per token, a fixed cost
whatever the length so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from groklm.model.lm_base import SizedConfig, TokenLM

# delta's initial range: softplus(dt_proj.bias) drawn log-uniformly from it, so some channels
# start with long memories and some with short ones.
DT_MIN, DT_MAX = 1e-3, 1e-1


@dataclass
class MambaConfig(SizedConfig):
    vocab_size: int = 8192
    block_size: int = 256  # the window trained on; generation can run past it
    n_layer: int = 4
    n_embd: int = 256
    d_state: int = 16  # numbers of state per inner channel
    expand: int = 2  # inner width = expand * n_embd
    d_conv: int = 4  # positions the causal convolution sees
    dt_rank: int | None = None  # width of delta's low-rank projection; None: ceil(n_embd / 16)
    dropout: float = 0.0  # on each block's output and before the head
    tie_embeddings: bool = True
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        self.check_sizes(("vocab_size", "block_size", "n_layer", "n_embd", "d_state", "expand", "d_conv"))
        if self.dt_rank is None:
            self.dt_rank = math.ceil(self.n_embd / 16)
        self.check_sizes(("dt_rank",))


def linear_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + b_t along dim 1, from h_{-1} = 0, for every t.

    On a CPU, T steps one after another: each is one operation on the whole batch's state, and
    the work is T states, the least possible. On an accelerator, where every step would be kernel
    launches of its own, `doubling_scan`: log2(T) rounds of whole-sequence operations, for
    about log2(T) times the work: on one CPU thread, forward and backward at T = 64 took 9x as
    long as the loop (16 x 224 x 16 states a step)."""
    if a.device.type != "cpu":
        return doubling_scan(a, b)
    h, states = torch.zeros_like(b[:, 0]), []
    for a_t, b_t in zip(a.unbind(1), b.unbind(1)):  # unbind, not a[:, t]: its backward is one stack, not T zero-filled copies
        h = a_t * h + b_t
        states.append(h)
    return torch.stack(states, dim=1)


def doubling_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """linear_scan's result in ceil(log2 T) rounds (Hillis-Steele). Composing two steps of the
    recurrence is again one step, (a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2); after the round
    with offset k, (a_t, b_t) is the composition of the steps t-2k+1 .. t, so at the end b_t is h_t."""
    offset = 1
    while offset < a.size(1):
        b = torch.cat([b[:, :offset], b[:, offset:] + a[:, offset:] * b[:, :-offset]], dim=1)
        a = torch.cat([a[:, :offset], a[:, offset:] * a[:, :-offset]], dim=1)
        offset *= 2
    return b


class MambaMixer(nn.Module):
    """The selective SSM block: (B, T, n_embd) -> (B, T, n_embd), mixing information along T."""

    def __init__(self, config: MambaConfig):
        super().__init__()
        inner, n_state = config.expand * config.n_embd, config.d_state
        self.inner, self.n_state, self.dt_rank = inner, n_state, config.dt_rank
        self.in_proj = nn.Linear(config.n_embd, 2 * inner, bias=False)  # the SSM's input and the gate z
        self.conv = nn.Conv1d(inner, inner, config.d_conv, groups=inner, padding=config.d_conv - 1)
        self.x_proj = nn.Linear(inner, config.dt_rank + 2 * n_state, bias=False)  # delta (low rank), B, C
        self.dt_proj = nn.Linear(config.dt_rank, inner)
        dt = torch.exp(torch.rand(inner) * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # the inverse of softplus
        # A_{d,n} = -(n + 1): each channel holds the same spread of decay rates, as in S4D-real.
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n_state + 1, dtype=torch.float32)).repeat(inner, 1))
        self.D = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, config.n_embd, bias=False)
        self.out_proj.is_residual_projection = True

    def selection(self, u: torch.Tensor):
        """The input-dependent part, from the convolved input u (..., inner):
        (decay a = exp(delta A) (..., inner, n_state), input b = delta B u (..., inner, n_state), C (..., n_state))."""
        dt_low, B, C = self.x_proj(u).split([self.dt_rank, self.n_state, self.n_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt_low))
        a = torch.exp(delta.unsqueeze(-1) * -torch.exp(self.A_log))
        b = (delta * u).unsqueeze(-1) * B.unsqueeze(-2)
        return a, b, C

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every position at once (training), from an empty state."""
        T = x.size(1)
        u, z = self.in_proj(x).chunk(2, dim=-1)
        u = F.silu(self.conv(u.transpose(1, 2))[..., :T].transpose(1, 2))  # drop the padding's overhang: causal
        a, b, C = self.selection(u)
        y = (linear_scan(a, b) * C.unsqueeze(-2)).sum(-1) + self.D * u
        return self.out_proj(y * F.silu(z))

    def step(self, x: torch.Tensor, state):
        """One position x (B, n_embd) -> (its output (B, n_embd), new state). The state is
        (the last d_conv - 1 inputs of the convolution (B, inner, d_conv - 1), h (B, inner, d_state));
        None: the start of a text."""
        u, z = self.in_proj(x).chunk(2, dim=-1)
        if state is None:
            kernel = self.conv.kernel_size[0]
            state = (x.new_zeros(x.size(0), self.inner, kernel - 1), x.new_zeros(x.size(0), self.inner, self.n_state))
        recent, h = state
        window = torch.cat([recent, u.unsqueeze(-1)], dim=-1)  # oldest first, as the kernel is laid out
        u = F.silu((window * self.conv.weight.squeeze(1)).sum(-1) + self.conv.bias)
        a, b, C = self.selection(u)
        h = a * h + b
        y = (h * C.unsqueeze(-2)).sum(-1) + self.D * u
        return self.out_proj(y * F.silu(z)), (window[..., 1:], h)


class MambaBlock(nn.Module):
    """Pre-norm residual: x + dropout(Mamba(norm(x)))."""

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.norm = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.mixer = MambaMixer(config)
        self.drop = nn.Dropout(config.dropout) if config.dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.mixer(self.norm(x)))

    def step(self, x: torch.Tensor, state):
        delta, state = self.mixer.step(self.norm(x), state)
        return x + self.drop(delta), state


class MambaLM(TokenLM):
    """A stack of Mamba blocks as a language model; step() generates from a carried state."""

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.build(config, [MambaBlock(config) for _ in range(config.n_layer)],
                   nn.RMSNorm(config.n_embd, eps=config.norm_eps))
