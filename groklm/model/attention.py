"""Masked multi-head self-attention, with grouped-query heads and rotary positions.

Each position asks a question (query), advertises what it holds (key), and offers a payload
(value). A position's output is the average of the values of all earlier positions, weighted
by softmax(q . k / sqrt(head_dim)). The causal mask hides the future, so the model can be
trained to predict every next token of a sequence at once.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from groklm.model.config import GPTConfig
from groklm.model.kv_cache import LayerCache
from groklm.model.ring_attention import ring_attention


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE): rotate each (q, k) pair of dimensions by an angle
    proportional to the position, so q . k depends only on the *relative* distance.
    Dimension i is paired with i + head_dim/2 (the "rotate half" layout Llama uses)."""

    def __init__(self, head_dim: int, max_len: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)  # (max_len, head_dim)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, heads, T, head_dim) -> the same, rotated by position.

        positions: (B, T) position of each token (packed sequences restart at 0 for each
        document); None means 0..T-1."""
        if positions is None:
            cos, sin = self.cos[: x.size(-2)], self.sin[: x.size(-2)]
        else:
            cos, sin = self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)  # (B, 1, T, hd)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        first, second = x.chunk(2, dim=-1)
        rotated_half = torch.cat([-second, first], dim=-1)
        return x * cos + rotated_half * sin


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.dropout = config.dropout
        # One matmul makes queries for every head and keys/values for the (fewer) kv heads.
        qkv_size = (config.n_head + 2 * config.n_kv_head) * config.head_dim
        self.qkv = nn.Linear(config.n_embd, qkv_size, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.proj.is_residual_projection = True
        self.resid_dropout = nn.Dropout(config.dropout) if config.dropout else nn.Identity()  # see MLP
        self.rotary = (
            RotaryEmbedding(config.head_dim, config.block_size, config.rope_theta)
            if config.pos == "rope"
            else None
        )
        # Sequence parallelism (set_sequence_parallel): the process group over which each sequence
        # is split, or None. A way of running, not part of the architecture, as grad_checkpoint is.
        self.sequence_group: dist.ProcessGroup | None = None

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        return_weights: bool = False,
        cache: LayerCache | None = None,
    ):
        """x: (B, T, n_embd) -> (B, T, n_embd); with return_weights also (B, n_head, T, T).

        mask: None for plain causal attention, or a (B, 1, T, T) boolean "may attend" matrix
        (causal and block-diagonal when several documents are packed into one row).
        cache: during generation, the KV cache of this layer (groklm.model.kv_cache): x holds
        only the new tokens, at `positions`; they attend over everything cached before them.
        Under sequence parallelism x is this rank's shard of the sequences and positions says
        where it sits in them (needed: rotary angles and the causal order follow from it)."""
        if self.sequence_group is not None and (positions is None or mask is not None or cache is not None
                                                or return_weights or (self.training and self.dropout)):
            raise ValueError("sequence-parallel attention takes a shard with its positions in the whole sequence, "
                             "and no mask, cache, attention weights or attention dropout")
        B, T, C = x.shape
        # Queries, then keys, then values, head by head: (B, n_head + 2 n_kv_head, T, head_dim).
        heads = self.qkv(x).view(B, T, self.n_head + 2 * self.n_kv_head, self.head_dim).transpose(1, 2)
        q_and_k, v = heads.split([self.n_head + self.n_kv_head, self.n_kv_head], dim=1)
        if self.rotary is not None:
            q_and_k = self.rotary(q_and_k, positions)  # queries and keys turn alike: one rotation for both
        q, k = q_and_k.split([self.n_head, self.n_kv_head], dim=1)
        causal = mask is None
        if cache is not None:
            k, v, mask = cache.update(k, v)  # keys/values of the whole sequence so far
            causal = False  # the cache's mask (or none: every key is visible) says what each token sees

        dropout = self.dropout if self.training else 0.0
        written_out = return_weights or (cache is None and self.sequence_group is None and written_out_is_faster(q, dropout))
        if written_out and self.n_kv_head != self.n_head:
            # Grouped-query attention: each kv head serves n_head / n_kv_head consecutive query heads.
            repeat = self.n_head // self.n_kv_head
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        if self.sequence_group is not None:
            y = ring_attention(q, k, v, self.sequence_group)
        elif written_out:
            y, weights = explicit_attention(q, k, v, mask)
        else:
            # The fused kernel reads each kv head once for its group of query heads, where
            # repeating them would copy the whole cache every step.
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal,
                                               enable_gqa=self.n_kv_head != self.n_head)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        y = self.resid_dropout(self.proj(y))
        return (y, weights) if return_weights else y


def set_sequence_parallel(model: nn.Module, group: dist.ProcessGroup | None) -> int:
    """Make every attention layer in `model` ring attention over the ranks of `group`
    (groklm/model/ring_attention.py), or (None) attention over whole sequences again; returns
    how many layers were found.

    Each rank then feeds the model its contiguous share of every sequence, with the positions
    of that share (GPT.forward's `positions`); the other layers work on each token alone and
    need nothing else. The ranks must run the model in step: every layer passes blocks round."""
    layers = [m for m in model.modules() if isinstance(m, CausalSelfAttention)]
    for layer in layers:
        layer.sequence_group = group
    return len(layers)


# Up to this many queries x keys per head, bf16 attention on a CPU is computed written out.
CPU_BF16_WRITTEN_OUT_MAX = 256 * 256


def written_out_is_faster(q: torch.Tensor, dropout: float) -> bool:
    """PyTorch's fused CPU attention is several times slower in bf16 than in float32 (its
    backward above all: 5.6 ms vs 2.0 ms at 12 x 4 heads x 64 tokens on 2 cores), while the
    written-out softmax(Q K^T) V in bf16 takes 1.3 ms. For short sequences its (T, T) weights
    are small, so mixed-precision training on a CPU takes that path."""
    T = q.size(-2)
    return q.device.type == "cpu" and q.dtype == torch.bfloat16 and dropout == 0.0 and T * T <= CPU_BF16_WRITTEN_OUT_MAX


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None):
    """softmax(Q K^T / sqrt(d)) V with the causal mask, written out so the weights can be seen.

    The fused `scaled_dot_product_attention` computes the same thing without materialising
    the (T, T) weight matrix; this path exists to look inside, to check the fused one, and for
    short bf16 sequences on a CPU, where it is the faster of the two (written_out_is_faster).
    mask: as in CausalSelfAttention.forward (None: causal).
    """
    T = q.size(-2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, heads, T, T)
    if mask is None:
        mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    return weights @ v, weights
