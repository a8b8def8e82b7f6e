"""An RWKV-style language model: attention's weighted average of the past, as a recurrence.

    token ids -> embedding -> norm -> n_layer x (x + TimeMix(norm(x)); x + ChannelMix(norm(x))) -> norm -> LM head

Time mixing gives each channel c at position t a weighted average of the values so far,

    wkv_t = (sum_{i<t} e^{-(t-1-i) w + k_i} v_i  +  e^{u + k_t} v_t)
          / (sum_{i<t} e^{-(t-1-i) w + k_i}      +  e^{u + k_t})

with a learned per-channel decay rate w = exp(w_raw) > 0 (each step back multiplies a token's
weight by exp(-w)) and a learned bonus u for the current token, which it weighs apart from the
past. The output is sigmoid(r_t) * wkv_t: the receptance r decides how much of it to let
through. r, k and v are projections of a "token shift": a learned per-channel mix of this
position's input and the previous one's. Channel mixing is the feed-forward part, with the same
token shift: sigmoid(r) * W_v relu(W_k x)^2.

Two paths compute the same function. Generation (`TimeMix.step`): the numerator and denominator
are running sums, decayed by exp(-w) per token, kept scaled by exp(-p) for their running maximum
exponent p so that no exponential overflows, however long the text. Training, in chunks of
CHUNK positions: within a chunk, wkv_t weighs the chunk's keys like attention does (exponents
k_i - (t-1-i) w, and u + k_t at i = t: an (L, L) matrix per channel, all chunks at once); what came
before the chunk arrives as the recurrence's state at the chunk's start, carried from chunk to
chunk with one step per chunk. Every exponent is taken relative to a maximum, as in the step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from groklm.model.lm_base import SizedConfig, TokenLM

# A running maximum that starts below any real exponent yet stays finite: exp(NO_EXPONENT - p)
# is exactly 0 for a finite p, with no inf - inf to make a NaN.
NO_EXPONENT = -1e38
# Positions per chunk of the training path: its work grows with T * CHUNK rather than T * T.
CHUNK = 16


@dataclass
class RWKVConfig(SizedConfig):
    vocab_size: int = 8192
    block_size: int = 256  # the window trained on; generation can run past it
    n_layer: int = 4
    n_embd: int = 256
    ffn_mult: int = 4  # channel mixing's hidden width = ffn_mult * n_embd
    dropout: float = 0.0  # on each sub-block's output and before the head
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        self.check_sizes(("vocab_size", "block_size", "n_layer", "n_embd", "ffn_mult"))


def token_shift_mix(layer: int, n_layer: int, n_embd: int) -> nn.Parameter:
    """How much of the current token each channel takes (the rest from the previous one): from
    (c / n_embd) ** depth_fraction, so lower layers and low channels lean on the previous token."""
    depth_fraction = 1.0 - layer / n_layer
    return nn.Parameter((torch.arange(n_embd, dtype=torch.float32) / n_embd) ** depth_fraction)


def shift(x: torch.Tensor) -> torch.Tensor:
    """x (B, T, C) -> the previous position's x at every position (zeros before the first)."""
    return F.pad(x, (0, 0, 1, -1))


class TimeMix(nn.Module):
    def __init__(self, config: RWKVConfig, layer: int):
        super().__init__()
        C = config.n_embd
        self.mix_k, self.mix_v, self.mix_r = (token_shift_mix(layer, config.n_layer, C) for _ in range(3))
        self.key, self.value, self.receptance = (nn.Linear(C, C, bias=False) for _ in range(3))
        self.output = nn.Linear(C, C, bias=False)
        self.output.is_residual_projection = True
        # Decay rates from fast (exp(-e^3) per step: the last few tokens) to slow (exp(-e^-5): hundreds),
        # spread over the channels so that every layer sees several time scales.
        spread = torch.arange(C, dtype=torch.float32) / max(C - 1, 1)
        self.w_raw = nn.Parameter(-5.0 + 8.0 * spread ** (0.7 + 1.3 * layer / max(config.n_layer - 1, 1)))
        self.u = nn.Parameter(torch.full((C,), math.log(0.3)))

    def projections(self, x: torch.Tensor, previous: torch.Tensor):
        """r, k, v from the token-shifted mixes of x and the previous position's x."""
        def mixed(weight):
            return x * weight + previous * (1 - weight)
        return self.receptance(mixed(self.mix_r)), self.key(mixed(self.mix_k)), self.value(mixed(self.mix_v))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every position at once (training), from an empty state: x (B, T, C) -> (B, T, C)."""
        B, T, C = x.shape
        r, k, v = self.projections(x, shift(x))
        L = min(CHUNK, T)
        n = -(-T // L)
        # Padding at the end changes nothing before it (causal) and is cut off below.
        k, v = (F.pad(t, (0, 0, 0, n * L - T)).view(B, n, L, C) for t in (k, v))
        w = torch.exp(self.w_raw)
        a, b, p = self.chunk_starts(k, v, w)  # (B, n, C) each
        # Query t of a chunk: the chunk's positions i <= t, and everything before the chunk (the
        # state at its start, decayed t steps further), weighed together against their joint maximum.
        within = k.transpose(2, 3).unsqueeze(3) + self.chunk_bias(L)  # (B, n, C, t, i)
        before = p.unsqueeze(2) - torch.arange(L, device=x.device).unsqueeze(1) * w  # (B, n, t, C)
        top = torch.maximum(within.amax(-1).transpose(2, 3), before)  # (B, n, t, C)
        weights = torch.exp(within - top.transpose(2, 3).unsqueeze(-1))
        carried = torch.exp(before - top)
        numerator = torch.einsum("bncti,bnic->bntc", weights, v) + carried * a.unsqueeze(2)
        denominator = weights.sum(-1).transpose(2, 3) + carried * b.unsqueeze(2)
        wkv = (numerator / denominator).reshape(B, n * L, C)[:, :T]
        return self.output(torch.sigmoid(r) * wkv)

    def chunk_bias(self, L: int) -> torch.Tensor:
        """(C, L, L): what query t adds to key i's exponent within a chunk: -(t-1-i) w for an
        earlier position, the bonus u for the current one, -inf for a later one."""
        t = torch.arange(L, device=self.u.device)
        past = -(t[:, None] - 1 - t[None, :]) * torch.exp(self.w_raw)[:, None, None]
        bias = torch.where(t[:, None] > t[None, :], past, self.u[:, None, None].expand_as(past))
        return bias.masked_fill(t[:, None] < t[None, :], float("-inf"))

    def chunk_starts(self, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor):
        """(a, b, p), each (B, n, C): the state `step` holds at the start of each chunk of k, v
        (B, n, L, C), carried from chunk to chunk: one step per chunk, not per position."""
        B, n, L, C = k.shape
        # Each key's exponent as seen from its chunk's last position.
        to_end = k - (L - 1 - torch.arange(L, device=k.device)).unsqueeze(1) * w
        a, b, p = k.new_zeros(B, C), k.new_zeros(B, C), k.new_full((B, C), NO_EXPONENT)
        starts = []
        for chunk in range(n):
            starts.append((a, b, p))
            decayed = p - L * w
            top = torch.maximum(decayed, to_end[:, chunk].amax(1))
            old, new = torch.exp(decayed - top), torch.exp(to_end[:, chunk] - top.unsqueeze(1))
            a, b, p = old * a + (new * v[:, chunk]).sum(1), old * b + new.sum(1), top
        return (torch.stack(part, dim=1) for part in zip(*starts))

    def step(self, x: torch.Tensor, state):
        """One position x (B, C) -> (its output, new state). The state is (the previous x,
        numerator a, denominator b, exponent p), a and b scaled by exp(-p); None: a text's start."""
        if state is None:
            state = (torch.zeros_like(x), torch.zeros_like(x), torch.zeros_like(x), torch.full_like(x, NO_EXPONENT))
        previous, a, b, p = state
        r, k, v = self.projections(x, previous)
        # The output: the past's sums, plus the current token with its bonus.
        with_current = self.u + k
        top = torch.maximum(p, with_current)
        past_scale, current_scale = torch.exp(p - top), torch.exp(with_current - top)
        wkv = (past_scale * a + current_scale * v) / (past_scale * b + current_scale)
        # The state for the next token: the past decays by exp(-w), the current token joins without bonus.
        decayed = p - torch.exp(self.w_raw)
        top = torch.maximum(decayed, k)
        past_scale, current_scale = torch.exp(decayed - top), torch.exp(k - top)
        state = (x, past_scale * a + current_scale * v, past_scale * b + current_scale, top)
        return self.output(torch.sigmoid(r) * wkv), state


class ChannelMix(nn.Module):
    def __init__(self, config: RWKVConfig, layer: int):
        super().__init__()
        C, hidden = config.n_embd, config.ffn_mult * config.n_embd
        self.mix_k, self.mix_r = (token_shift_mix(layer, config.n_layer, C) for _ in range(2))
        self.key = nn.Linear(C, hidden, bias=False)
        self.value = nn.Linear(hidden, C, bias=False)
        self.value.is_residual_projection = True
        self.receptance = nn.Linear(C, C, bias=False)

    def mix(self, x: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        k = self.key(x * self.mix_k + previous * (1 - self.mix_k))
        r = self.receptance(x * self.mix_r + previous * (1 - self.mix_r))
        return torch.sigmoid(r) * self.value(torch.relu(k) ** 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(x, shift(x))

    def step(self, x: torch.Tensor, previous: torch.Tensor | None):
        """One position (B, C) -> (its output, this x: the next position's previous)."""
        return self.mix(x, torch.zeros_like(x) if previous is None else previous), x


class RWKVBlock(nn.Module):
    def __init__(self, config: RWKVConfig, layer: int):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(config.n_embd), nn.LayerNorm(config.n_embd)
        self.time_mix, self.channel_mix = TimeMix(config, layer), ChannelMix(config, layer)
        self.drop = nn.Dropout(config.dropout) if config.dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.time_mix(self.ln_1(x)))
        return x + self.drop(self.channel_mix(self.ln_2(x)))

    def step(self, x: torch.Tensor, state):
        time_state, channel_state = state or (None, None)
        delta, time_state = self.time_mix.step(self.ln_1(x), time_state)
        x = x + self.drop(delta)
        delta, channel_state = self.channel_mix.step(self.ln_2(x), channel_state)
        return x + self.drop(delta), (time_state, channel_state)


class RWKVLM(TokenLM):
    """A stack of RWKV blocks as a language model; step() generates from a carried state."""

    def __init__(self, config: RWKVConfig):
        super().__init__()
        self.ln_in = nn.LayerNorm(config.n_embd)  # RWKV normalises the embedding before the first block
        self.build(config, [RWKVBlock(config, layer) for layer in range(config.n_layer)], nn.LayerNorm(config.n_embd))

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        return self.ln_in(self.wte(idx))
