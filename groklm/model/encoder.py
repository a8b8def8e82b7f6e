"""The encoder-only transformer (BERT), which turns a text into vectors rather than continuing it.

    token ids -> token + position + segment embeddings -> norm -> n_layer x EncoderLayer

Three differences from the GPT in gpt.py, each for a reason:

  * Attention is *bidirectional*: every token sees the whole text, before and after it. An
    encoder reads; it never has to predict the next token, so nothing needs hiding. The only
    mask hides the padding that lets texts of different lengths share a batch.
  * A third embedding, the token type ("segment"), says which of two texts a token belongs to
    (BERT was trained on sentence pairs). A single text is all segment 0.
  * Post-norm, as the original transformer: x = norm(x + sublayer(x)). GPT-2 moved the norm in
    front of the sub-layer (pre-norm) because deep stacks train more stably that way; we keep
    BERT's order because the checkpoints we load were trained with it.

`Encoder.from_hf(dir)` loads a Hugging Face BERT-family checkpoint (config.json, weights,
WordPiece tokenizer.json). Sentence embeddings (mean pooling) live in groklm.apps.rag.embed.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

from groklm.errors import CheckpointError, ConfigError
from groklm.tokenizer.wordpiece import WordPieceTokenizer

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),  # the exact (erf) GELU, BERT's own
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


@dataclass
class EncoderConfig:
    """Shape of a BERT encoder; the defaults are BERT-base's."""

    vocab_size: int = 30522
    max_positions: int = 512
    type_vocab_size: int = 2
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    mlp_hidden: int = 3072
    activation: str = "gelu"
    norm_eps: float = 1e-12
    dropout: float = 0.1
    pad_id: int = 0

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; known: {sorted(ACTIVATIONS)}")

    @classmethod
    def from_hf(cls, hf: dict) -> EncoderConfig:
        """From a BERT config.json."""
        if hf.get("model_type") != "bert":
            raise ConfigError(f"model_type {hf.get('model_type')!r} is not supported: only BERT-shaped encoders ('bert')")
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ConfigError(f"position_embedding_type {hf['position_embedding_type']!r} is not supported (absolute only)")
        return cls(
            vocab_size=hf["vocab_size"],
            max_positions=hf["max_position_embeddings"],
            type_vocab_size=hf.get("type_vocab_size", 2),
            n_layer=hf["num_hidden_layers"],
            n_head=hf["num_attention_heads"],
            n_embd=hf["hidden_size"],
            mlp_hidden=hf["intermediate_size"],
            activation=hf.get("hidden_act", "gelu"),
            norm_eps=hf.get("layer_norm_eps", 1e-12),
            dropout=hf.get("hidden_dropout_prob", 0.1),
            pad_id=hf.get("pad_token_id") or 0,
        )


class EncoderLayer(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)  # queries, keys, values in one matmul
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.norm_1 = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.fc = nn.Linear(config.n_embd, config.mlp_hidden)
        self.fc_out = nn.Linear(config.mlp_hidden, config.n_embd)
        self.norm_2 = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.activation = ACTIVATIONS[config.activation]
        self.dropout = config.dropout
        self.drop = nn.Dropout(config.dropout)

    def attention(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, T, C); mask: (B, 1, 1, T) True where a real token may be attended to."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # no causal mask
        return self.proj(y.transpose(1, 2).reshape(B, T, C))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm_1(x + self.drop(self.attention(x, mask)))
        return self.norm_2(x + self.drop(self.fc_out(self.activation(self.fc(x)))))


class Encoder(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd, padding_idx=config.pad_id)
        self.pos_emb = nn.Embedding(config.max_positions, config.n_embd)
        self.type_emb = nn.Embedding(config.type_vocab_size, config.n_embd)
        self.emb_norm = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.n_layer))
        self.tokenizer = None  # set by from_hf: the WordPiece tokenizer that came with the weights

    def forward(
        self,
        ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ids: (B, T) -> the hidden state of every token, (B, T, n_embd).

        attention_mask: (B, T), 1 for real tokens and 0 for padding (None: no padding).
        type_ids: (B, T) segment of each token (None: all segment 0)."""
        T = ids.size(1)
        if T > self.config.max_positions:
            raise ValueError(f"sequence of length {T} is longer than max_positions={self.config.max_positions}")
        if type_ids is None:
            type_ids = torch.zeros_like(ids)
        positions = torch.arange(T, device=ids.device)
        x = self.drop(self.emb_norm(self.tok_emb(ids) + self.pos_emb(positions) + self.type_emb(type_ids)))
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        for layer in self.layers:
            x = layer(x, mask)
        return x

    @classmethod
    def from_hf(cls, directory: str | Path, device: str = "cpu") -> Encoder:
        """Load a Hugging Face BERT-family checkpoint: config.json, model.safetensors (or
        pytorch_model.bin, read without pickle's code execution) and tokenizer.json."""
        directory = Path(directory)
        config_path = directory / "config.json"
        if not config_path.is_file():
            raise CheckpointError(f"{directory} has no config.json: not a Hugging Face model directory")
        config = EncoderConfig.from_hf(json.loads(config_path.read_text()))
        model = cls(config)
        model.load_state_dict(ours_from_hf(read_hf_weights(directory), config))
        model.tokenizer = WordPieceTokenizer.from_hf_file(directory / "tokenizer.json")
        return model.to(device).eval()


def read_hf_weights(directory: Path) -> dict[str, torch.Tensor]:
    safetensors_path, bin_path = directory / "model.safetensors", directory / "pytorch_model.bin"
    if safetensors_path.is_file():
        return load_file(str(safetensors_path))
    if bin_path.is_file():
        try:
            return torch.load(bin_path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:  # refused or corrupt
            raise CheckpointError(f"{bin_path} could not be read safely: {error}") from error
    raise CheckpointError(f"{directory} has neither model.safetensors nor pytorch_model.bin")


def ours_from_hf(hf: dict[str, torch.Tensor], config: EncoderConfig) -> dict[str, torch.Tensor]:
    """Rename a BertModel state dict to ours; q, k, v are stacked into one qkv matrix.

    Checkpoints saved from BertForMaskedLM & co. prefix every name with "bert."; old ones call
    LayerNorm's weight and bias gamma and beta. The pooler and task heads are not used."""
    def clean(name: str) -> str:
        name = name.removeprefix("bert.")
        return name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")

    hf = {clean(name): tensor.float() for name, tensor in hf.items()}
    renames = {
        "tok_emb.weight": "embeddings.word_embeddings.weight",
        "pos_emb.weight": "embeddings.position_embeddings.weight",
        "type_emb.weight": "embeddings.token_type_embeddings.weight",
        "emb_norm.weight": "embeddings.LayerNorm.weight",
        "emb_norm.bias": "embeddings.LayerNorm.bias",
    }
    for i in range(config.n_layer):
        h = f"encoder.layer.{i}."
        for ours, theirs in [
            ("proj", "attention.output.dense"),
            ("norm_1", "attention.output.LayerNorm"),
            ("fc", "intermediate.dense"),
            ("fc_out", "output.dense"),
            ("norm_2", "output.LayerNorm"),
        ]:
            for kind in ("weight", "bias"):
                renames[f"layers.{i}.{ours}.{kind}"] = f"{h}{theirs}.{kind}"
    stacked = {  # our fused qkv <- their three projections
        f"layers.{i}.qkv.{kind}": [f"encoder.layer.{i}.attention.self.{p}.{kind}" for p in ("query", "key", "value")]
        for i in range(config.n_layer)
        for kind in ("weight", "bias")
    }
    missing = [name for name in [*renames.values(), *(n for names in stacked.values() for n in names)] if name not in hf]
    if missing:
        raise CheckpointError(f"the checkpoint is not a BERT encoder: missing {missing[:5]}")
    state = {ours: hf[theirs] for ours, theirs in renames.items()}
    state |= {ours: torch.cat([hf[name] for name in theirs]) for ours, theirs in stacked.items()}
    return state
