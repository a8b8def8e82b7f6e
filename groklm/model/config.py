"""GPTConfig: every shape and architectural choice of the decoder, in one dataclass.

Field names follow nanoGPT (n_layer, n_head, n_embd, block_size, ...), which users know.
The choices cover both families people meet in practice:
  GPT-2 shape:  pos="learned", norm="layernorm", mlp="gelu",   bias=True
  Llama shape:  pos="rope",    norm="rmsnorm",   mlp="swiglu", bias=False, n_kv_head < n_head
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from groklm.errors import ConfigError

POSITIONS = ("learned", "sinusoidal", "rope")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "gelu_exact", "swiglu")


@dataclass
class GPTConfig:
    vocab_size: int = 8192
    block_size: int = 256  # the longest context the model sees
    n_layer: int = 6
    n_head: int = 6
    n_kv_head: int | None = None  # < n_head: grouped-query attention; None: same as n_head
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = True  # biases in Linear layers and LayerNorms
    pos: str = "learned"  # learned | sinusoidal | rope
    norm: str = "layernorm"  # layernorm | rmsnorm
    mlp: str = "gelu"  # gelu (tanh-approximated, GPT-2) | gelu_exact (erf, nanoGPT) | swiglu
    tie_embeddings: bool = True  # the LM head reuses the token embedding matrix
    mlp_hidden: int | None = None  # None: 4*n_embd for gelu(_exact), ~8/3*n_embd (multiple of 64) for swiglu
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    # Mixture of experts (see moe.py): moe_experts > 0 replaces every block's MLP with that many
    # expert MLPs, of which each token uses moe_top_k. 0 keeps the dense MLP.
    moe_experts: int = 0
    moe_top_k: int = 2
    moe_capacity_factor: float = 1.25  # an expert takes at most this times its even share of tokens; 0: no limit
    moe_aux_weight: float = 0.01  # weight of the load-balancing loss added while training
    # Mixture of depths (see depth_router.py): mod_capacity > 0 lets only that share of each
    # sequence's tokens through every mod_every-th block (blocks mod_every-1, 2*mod_every-1, ...);
    # the rest skip it on the residual stream. 0 keeps every block dense.
    mod_capacity: float = 0.0
    mod_every: int = 2

    def __post_init__(self) -> None:
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.mlp_hidden is None:
            self.mlp_hidden = _swiglu_hidden(self.n_embd) if self.mlp == "swiglu" else 4 * self.n_embd
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def validate(self) -> None:
        _choice("pos", self.pos, POSITIONS)
        _choice("norm", self.norm, NORMS)
        _choice("mlp", self.mlp, MLPS)
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_kv_head", "n_embd", "mlp_hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if self.n_head % self.n_kv_head:
            raise ConfigError(f"n_head={self.n_head} must be divisible by n_kv_head={self.n_kv_head}")
        if self.pos == "rope" and self.head_dim % 2:
            raise ConfigError(f"rope needs an even head size, got n_embd/n_head={self.head_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        self.validate_moe()
        self.validate_mod()

    def validate_moe(self) -> None:
        experts, top_k = self.moe_experts, self.moe_top_k
        for name, value in (("moe_experts", experts), ("moe_top_k", top_k)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
        if experts and not 1 <= top_k <= experts:
            raise ConfigError(f"moe_top_k must be between 1 and moe_experts={experts}, got {top_k}")
        if self.moe_capacity_factor < 0 or self.moe_aux_weight < 0:
            raise ConfigError("moe_capacity_factor and moe_aux_weight must be >= 0")

    def validate_mod(self) -> None:
        if isinstance(self.mod_capacity, bool) or not isinstance(self.mod_capacity, (int, float)) \
                or not 0.0 <= self.mod_capacity <= 1.0:
            raise ConfigError(f"mod_capacity must be a share of tokens in [0, 1] (0: no mixture of depths), "
                              f"got {self.mod_capacity!r}")
        if not isinstance(self.mod_every, int) or isinstance(self.mod_every, bool) or self.mod_every < 1:
            raise ConfigError(f"mod_every must be a positive integer, got {self.mod_every!r}")
        if not self.mod_capacity:
            return
        if not self.mod_layers:
            raise ConfigError(f"mod_every={self.mod_every} is more than n_layer={self.n_layer}: no block would be "
                              "routed; lower mod_every or set mod_capacity=0")
        if self.moe_experts:
            # Expert capacity counts tokens in order across the batch; the routed block's padded rows would take it.
            raise ConfigError("mod_capacity and moe_experts cannot be combined: pick one of mixture of depths "
                              "and mixture of experts")

    @property
    def mod_layers(self) -> tuple[int, ...]:
        """The blocks mixture of depths routes: every mod_every-th, the first block always dense; () when off."""
        if not self.mod_capacity:
            return ()
        return tuple(range(self.mod_every - 1, self.n_layer, self.mod_every))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "GPTConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown model config key(s) {unknown}; known keys: {sorted(known)}")
        try:
            return cls(**values)
        except TypeError as error:
            raise ConfigError(f"bad model config: {error}") from error


def _swiglu_hidden(n_embd: int) -> int:
    """SwiGLU has three matrices instead of two; 8/3 * n_embd keeps the parameter count of a 4x MLP."""
    return 64 * ((8 * n_embd // 3 + 63) // 64)


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
