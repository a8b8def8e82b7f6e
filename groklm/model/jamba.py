"""A Jamba-style hybrid language model: a few attention layers among Mamba layers.

    token ids -> embedding -> n_layer x layer -> norm -> LM head
    layer: x = x + mixer(norm(x)); x = x + MLP(norm(x)), the mixer attention or Mamba

One layer in every `attn_every` is the GPT's attention block (gpt.Block: causal self-attention
and MLP), the others a Mamba mixer (mamba.py) with the same MLP. The Mamba layers carry a
fixed-size state and are cheap per token; the attention layers can look up any earlier token
exactly, which a fixed-size state cannot promise (copying, recalling a name from far back). A
few attention layers buy most of that at a fraction of their cost over a whole stack. There is
no position code: the Mamba layers read the order of the tokens, so attention needs none.

Generation carries a state per layer: a Mamba layer's (convolution inputs, h), an attention
layer's keys and values so far (its KV cache, which grows by one entry per token).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from groklm.errors import ConfigError
from groklm.model.config import GPTConfig
from groklm.model.gpt import MLP, Block, make_norm
from groklm.model.lm_base import SizedConfig, TokenLM
from groklm.model.mamba import MambaConfig, MambaMixer


@dataclass
class JambaConfig(SizedConfig):
    vocab_size: int = 8192
    block_size: int = 256  # the window trained on
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4  # in the attention layers
    attn_every: int = 4  # one attention layer in every attn_every layers (1: all attention)
    d_state: int = 16  # the Mamba layers' state per inner channel, as in MambaConfig
    expand: int = 2
    d_conv: int = 4
    dropout: float = 0.0
    tie_embeddings: bool = True
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        self.check_sizes(("vocab_size", "block_size", "n_layer", "n_embd", "n_head", "attn_every", "d_state",
                          "expand", "d_conv"))
        if not any(self.is_attention(layer) for layer in range(self.n_layer)):
            raise ConfigError(f"n_layer={self.n_layer} with attn_every={self.attn_every} has no attention layer "
                              f"(layer {self.attn_every // 2} would be the first): lower attn_every or add layers")
        self.attention_config()  # its own checks: n_embd divisible by n_head

    def is_attention(self, layer: int) -> bool:
        """The middle layer of each group of attn_every, as Jamba places its attention layers."""
        return layer % self.attn_every == self.attn_every // 2

    def attention_config(self) -> GPTConfig:
        """The shape of the attention layers and of every layer's MLP: Llama's (RMSNorm, SwiGLU, no
        biases). pos="learned" only keeps rotary positions out of attention: the learned table
        belongs to the GPT model, which is not built here."""
        return GPTConfig(vocab_size=self.vocab_size, block_size=self.block_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, dropout=self.dropout, bias=False, pos="learned",
                         norm="rmsnorm", mlp="swiglu", norm_eps=self.norm_eps)

    def mamba_config(self) -> MambaConfig:
        return MambaConfig(vocab_size=self.vocab_size, block_size=self.block_size, n_layer=self.n_layer,
                           n_embd=self.n_embd, d_state=self.d_state, expand=self.expand, d_conv=self.d_conv,
                           dropout=self.dropout, norm_eps=self.norm_eps)


class GrowingKV:
    """The keys and values an attention layer has seen, in the role of a KV-cache layer
    (CausalSelfAttention's `cache`: update(k, v) -> (every key, every value, mask)). No mask: one
    new token may attend to every cached one."""

    def __init__(self, kv: tuple[torch.Tensor, torch.Tensor] | None):
        self.kv = kv

    def update(self, k: torch.Tensor, v: torch.Tensor):
        if self.kv is not None:
            k, v = torch.cat([self.kv[0], k], dim=2), torch.cat([self.kv[1], v], dim=2)
        self.kv = (k, v)
        return k, v, None


class AttentionLayer(Block):
    """gpt.Block, with a step that carries its keys and values."""

    def step(self, x: torch.Tensor, state):
        cache = GrowingKV(state)
        return super().forward(x.unsqueeze(1), cache=cache).squeeze(1), cache.kv


class MambaLayer(nn.Module):
    """A Mamba mixer where the attention would be, then the same MLP as an attention layer."""

    def __init__(self, config: JambaConfig):
        super().__init__()
        attention = config.attention_config()
        self.ln_1, self.ln_2 = make_norm(attention), make_norm(attention)
        self.mixer = MambaMixer(config.mamba_config())
        self.mlp = MLP(attention)
        self.drop = nn.Dropout(config.dropout) if config.dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.mixer(self.ln_1(x)))
        return x + self.mlp(self.ln_2(x))

    def step(self, x: torch.Tensor, state):
        delta, state = self.mixer.step(self.ln_1(x), state)
        x = x + self.drop(delta)
        return x + self.mlp(self.ln_2(x)), state


class JambaLM(TokenLM):
    def __init__(self, config: JambaConfig):
        super().__init__()
        attention = config.attention_config()
        layers = [AttentionLayer(attention) if config.is_attention(layer) else MambaLayer(config)
                  for layer in range(config.n_layer)]
        self.build(config, layers, make_norm(attention))
