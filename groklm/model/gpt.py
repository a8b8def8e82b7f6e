"""The decoder-only transformer (GPT), top to bottom.

    token ids -> token embedding (+ position embedding) -> n_layer x Block -> norm -> LM head

Each Block is pre-norm: x = x + attn(norm(x)); x = x + mlp(norm(x)). The residual stream
carries information straight through; each sub-layer reads from it and writes back a delta.

Generation lives in groklm.infer: the reference decoder (decode.py) calls forward() once per
token; the engine (engine.py) calls forward_cached() with a KV cache.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from groklm.errors import CheckpointError, ConfigError
from groklm.model.attention import CausalSelfAttention
from groklm.model.config import GPTConfig
from groklm.model.depth_router import DepthRouter, predictor_loss, routed_count
from groklm.model.kv_cache import KVCache
from groklm.model.moe import MoE, moe_aux_loss
from groklm.model.weights import load_weights
from groklm.rundir import WEIGHTS_FILE, read_config

IGNORE_INDEX = -100  # targets with this value add nothing to the loss (e.g. prompt tokens in SFT)


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (B, T, vocab) against targets (B, T), in float32, leaving out
    IGNORE_INDEX targets: the language-modelling loss of every architecture here."""
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX)


def make_norm(config: GPTConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd, eps=config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


class MLP(nn.Module):
    """Position-wise feed-forward network: where most of the parameters (and knowledge) live.

    gelu:       proj(gelu(fc(x)))          -- GPT-2 (tanh-approximated GELU, as GPT-2 used)
    gelu_exact: the same with the exact (erf) GELU, as nanoGPT and PyTorch's nn.GELU compute it;
                about 3x cheaper than the tanh form on a CPU (docs/performance.md)
    swiglu:     proj(silu(gate(x)) * fc(x)) -- Llama: a learned gate multiplies the hidden units
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.kind = config.mlp
        self.fc = nn.Linear(config.n_embd, config.mlp_hidden, bias=config.bias)
        self.gate = nn.Linear(config.n_embd, config.mlp_hidden, bias=config.bias) if self.kind == "swiglu" else None
        self.proj = nn.Linear(config.mlp_hidden, config.n_embd, bias=config.bias)
        self.proj.is_residual_projection = True
        # Without dropout, an Identity: nn.Dropout costs a call even when it does nothing,
        # several times per layer on every decode step.
        self.dropout = nn.Dropout(config.dropout) if config.dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            hidden = F.silu(self.gate(x)) * self.fc(x)
        else:
            hidden = F.gelu(self.fc(x), approximate="none" if self.kind == "gelu_exact" else "tanh")
        return self.dropout(self.proj(hidden))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        # A mixture of experts swaps the one MLP for several, each token using a few (moe.py).
        self.mlp = MoE(config, lambda: MLP(config)) if config.moe_experts else MLP(config)

    def forward(self, x: torch.Tensor, positions=None, mask=None, return_weights: bool = False, cache=None):
        if return_weights:
            delta, weights = self.attn(self.ln_1(x), positions, mask, return_weights=True)
            x = x + delta
            return x + self.mlp(self.ln_2(x)), weights
        x = x + self.attn(self.ln_1(x), positions, mask, cache=cache)
        return x + self.mlp(self.ln_2(x))


def packing_layout(doc_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For rows that pack several documents, (B, T) document ids ->
    (positions (B, T) counted from each document's start, mask (B, 1, T, T) "may attend").

    A token attends to earlier tokens of its own document only, and its position restarts at
    0 with every document, so a packed row trains exactly like its documents one by one."""
    B, T = doc_ids.shape
    index = torch.arange(T, device=doc_ids.device).expand(B, T)
    starts_doc = torch.ones_like(doc_ids, dtype=torch.bool)
    starts_doc[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    doc_start = torch.where(starts_doc, index, torch.zeros_like(index)).cummax(dim=1).values
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    return index - doc_start, (same_doc & causal).unsqueeze(1)


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """The fixed position code of "Attention Is All You Need": sin/cos waves of geometric wavelengths."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return table


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        # Where each token is: learned (GPT-2), fixed sinusoids (original transformer), or
        # nothing here at all for rope, which rotates queries and keys inside attention.
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if config.pos == "learned" else None
        if config.pos == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_table(config.block_size, config.n_embd), persistent=False)
        self.drop = nn.Dropout(config.dropout) if config.dropout else nn.Identity()
        # Mixture of depths: some blocks process only the tokens their router picks (depth_router.py).
        self.blocks = nn.ModuleList(DepthRouter(config, Block(config)) if i in config.mod_layers else Block(config)
                                    for i in range(config.n_layer))
        self.ln_f = make_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight  # one matrix reads tokens in and writes them out
        # Gradient checkpointing (set_grad_checkpoint): a training setting, not part of the
        # architecture, so it lives on the module rather than in GPTConfig / config.json.
        self.grad_checkpoint = False
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2 init: N(0, 0.02); projections into the residual stream scaled by 1/sqrt(2 n_layer)
        so the stream's variance does not grow with depth."""
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "is_residual_projection", False):
                std /= math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # ---- the forward pass -------------------------------------------------------------------

    def embed(self, idx: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        T = idx.size(1)
        if T > self.config.block_size:
            raise ValueError(f"sequence of length {T} is longer than block_size={self.config.block_size}")
        if positions is None:
            positions = torch.arange(T, device=idx.device)
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(positions)
        elif self.config.pos == "sinusoidal":
            x = x + self.pos_table[positions]
        return self.drop(x)

    def hidden_states(self, idx: torch.Tensor, doc_ids: torch.Tensor | None = None,
                      positions: torch.Tensor | None = None) -> torch.Tensor:
        """idx: (B, T) -> the final (normed) hidden state of every position, (B, T, n_embd).

        doc_ids: (B, T) ids of the documents packed into each row (see packing_layout), or
        None for one document per row. Heads other than the LM head (a reward model's scalar,
        a value head) read from here.
        positions: (B, T) where in their sequences the tokens of idx sit, when idx is one shard
        of longer sequences (sequence parallelism, groklm/model/ring_attention.py); None: 0..T-1."""
        positions, mask = packing_layout(doc_ids) if doc_ids is not None else (positions, None)
        x = self.embed(idx, positions)
        # Checkpointing only pays when a backward pass will follow: under no_grad (evaluation,
        # a DPO reference pass) nothing is kept for it anyway.
        recompute = self.grad_checkpoint and torch.is_grad_enabled()
        for block in self.blocks:
            if recompute:
                # Keep only the block's input; its activations are recomputed during backward.
                # The RNG state is replayed, so dropout draws the same mask both times.
                x = checkpoint(block, x, positions, mask, use_reentrant=False)
            else:
                x = block(x, positions, mask)
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, doc_ids: torch.Tensor | None = None,
                positions: torch.Tensor | None = None):
        """idx: (B, T) token ids -> (logits (B, T, vocab), loss or None).

        With targets (B, T), the loss is the mean cross-entropy of predicting targets[t] from
        idx[:t+1]; positions whose target is IGNORE_INDEX are left out. positions: as in hidden_states.
        """
        logits = self.lm_head(self.hidden_states(idx, doc_ids, positions))
        loss = None
        if targets is not None:
            loss = next_token_loss(logits, targets)
            if self.training and self.config.moe_experts:
                # Only while training: evaluation reports plain cross-entropy, comparable with a dense model.
                loss = loss + self.config.moe_aux_weight * moe_aux_loss(self)
            if self.training and self.config.mod_capacity:  # trains the predictors that route at inference
                loss = loss + predictor_loss(self)
        return logits, loss

    def forward_cached(self, idx: torch.Tensor, cache: KVCache, slots: list[int]) -> torch.Tensor:
        """Feed new tokens idx (B, T) of the sequences held in cache rows `slots`, appending
        their keys and values to the cache -> logits of each row's last token, (B, vocab).

        Prefill is one call with the whole prompt (T = prompt length); each decode step is one
        call with T = 1. Only the last position's logits are computed: nothing else is sampled."""
        batch = cache.batch(slots, idx.size(1))
        if batch.length > self.config.block_size:
            raise ValueError(f"the sequence would pass block_size={self.config.block_size}")
        x = self.embed(idx, batch.positions)
        for i, block in enumerate(self.blocks):
            x = block(x, batch.positions, cache=cache.layer(i, batch))
        cache.advance(slots, idx.size(1))
        return self.lm_head(self.ln_f(x[:, -1]))

    @torch.no_grad()
    def attention_weights(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """Run the explicit attention path; one (B, n_head, T, T) weight tensor per layer."""
        x = self.embed(idx)
        maps = []
        for block in self.blocks:
            x, weights = block(x, return_weights=True)
            maps.append(weights)
        return maps

    # ---- bookkeeping ------------------------------------------------------------------------

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (shared tensors once); non_embedding leaves out token/position tables."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.wte.weight.numel()
            if self.wpe is not None:
                total -= self.wpe.weight.numel()
        return total

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward): 6 N for the matmuls with weights plus
        12 L T d for attention scores and mixing (the PaLM appendix estimate).

        N counts every weight a matmul multiplies by: not the position table (a lookup), nor an
        untied token table (a lookup); a tied one is the LM head's matmul, so it counts.
        A mixture-of-depths block (training routing) runs its weights on k of the T tokens, and
        those k attend among themselves: share k/T of its matmuls, (k/T)^2 of its attention."""
        T = seq_len or self.config.block_size
        c = self.config
        matmul_params = self.num_params()
        if self.wpe is not None:
            matmul_params -= self.wpe.weight.numel()
        if not c.tie_embeddings:
            matmul_params -= self.wte.weight.numel()
        attention_layers = c.n_layer
        for block in self.blocks:
            if isinstance(block, DepthRouter):
                share = routed_count(block.capacity, T) / T
                matmul_params -= (1 - share) * sum(p.numel() for p in block.block.parameters())
                attention_layers -= 1 - share * share
        return 6 * matmul_params + 12 * attention_layers * c.n_embd * T

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str | torch.device = "cpu") -> "GPT":
        """Load the model a run directory holds (config.json + model.safetensors)."""
        saved = read_config(run_dir)
        if "lora" in saved:  # adapters only: their base and LoRA live in lora.py, above this module
            raise CheckpointError(
                f"{run_dir} is a LoRA run (adapters on top of {saved['lora']['base']}): load it with "
                f"groklm.load, which adds the adapters, or merge it first (groklm merge {run_dir} --out MERGED)"
            )
        config = GPTConfig.from_dict(saved["model"])
        model = cls(config)
        load_weights(model, Path(run_dir) / WEIGHTS_FILE)
        return model.to(device).eval()


def set_grad_checkpoint(model: nn.Module, enabled: bool = True) -> int:
    """Turn gradient checkpointing on (or off) in every GPT inside `model` (a bare GPT, a reward
    model's backbone, a LoRA-wrapped GPT); returns how many were found.

    Training normally keeps every block's activations from the forward pass until backward, so
    activation memory grows with n_layer * batch * sequence length. With checkpointing each
    block keeps only its input and runs its forward a second time during backward: activation
    memory drops to about one block's worth plus one tensor per block, for roughly one extra
    forward pass of compute (benchmarks/finetune.py: 0.63x peak memory, 0.84x tokens/s for LoRA on
    SmolLM2-135M at 512 tokens). Worth it for long sequences."""
    found = [m for m in model.modules() if isinstance(m, GPT)]
    if not found:
        raise ConfigError(
            f"grad_checkpoint works on transformer decoders (GPT); this stage trains a {type(model).__name__}, "
            "which has none: leave grad_checkpoint out"
        )
    for gpt in found:
        gpt.grad_checkpoint = enabled
    return len(found)
