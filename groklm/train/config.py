"""TrainConfig: how to train (batch, schedule, optimizer, precision), plus named presets.

A run's full configuration is a model config (GPTConfig) and a TrainConfig. A preset fills
both; `--set key=value` then overrides any single field of either, parsed by the field's type.

Batch arithmetic: one optimizer step sees `batch_size * grad_accum` sequences of block_size
tokens, however many processes share the work. With N processes each runs grad_accum / N of
the micro-batches, so adding processes changes the speed, never the result.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from groklm.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
OPTIMIZERS = ("adamw", "muon")


@dataclass
class TrainConfig:
    batch_size: int = 12  # sequences per micro-batch, per process
    grad_accum: int = 1  # micro-batches per optimizer step, over all processes together
    max_iters: int = 2000  # optimizer steps
    lr: float = 1e-3  # peak learning rate, reached at the end of warmup
    min_lr: float = 1e-4  # where the cosine decay ends
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # None: decay over the whole run (max_iters)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    # adamw | muon: Muon (torch.optim.Muon) for the hidden layers' weight matrices, AdamW with the
    # settings above for embeddings, output heads, norms and biases. A LoRA run trains its
    # adapters with AdamW either way (train/loop.py, muon_matrices, says why).
    optimizer: str = "adamw"
    muon_lr: float = 0.02  # Muon's peak learning rate; the schedule scales it as it scales lr
    muon_momentum: float = 0.95
    eval_interval: int = 250  # validate (and checkpoint) every this many steps, and at the end
    eval_iters: int = 20  # validation batches per evaluation
    log_interval: int = 10  # steps between metrics.jsonl lines
    seed: int = 1337
    # Pretraining: 0 draws windows from the whole train split; N only from its first N tokens, so a run of more
    # tokens than N repeats them (the data-limited regime `groklm scaling` measures).
    train_tokens: int = 0
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto (bf16 on a GPU or CPU that has it, else fp16 on a GPU, fp32 on a CPU) | float32 | bfloat16 | float16
    compile: bool = False  # torch.compile the model: slower start, faster steps (GPU)
    grad_checkpoint: bool = False  # recompute each block in backward: far less activation memory, one extra forward a step (long sequences)
    # Sequence parallelism (torchrun, GPT pretraining): every process takes the same sequences and its own
    # contiguous 1/N of each; attention passes keys and values round the processes (ring attention).
    sequence_parallel: bool = False
    # LoRA (groklm/model/lora.py): train low-rank adapters on a frozen base instead of every weight.
    lora_rank: int = 0  # 0: full fine-tuning; r >= 1: rank-r adapters (the run stores only them)
    lora_alpha: float | None = None  # the adapters' output is scaled by alpha / rank; None: 2 * rank
    lora_dropout: float = 0.0  # dropout on the adapters' input
    lora_targets: str = "attn,mlp"  # groups (attn, mlp), projections (q,k,v,o,gate,up,down) or name patterns

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("batch_size", "grad_accum", "max_iters", "eval_interval", "eval_iters", "log_interval"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.warmup_iters < 0 or self.seed < 0 or self.train_tokens < 0:
            raise ConfigError("warmup_iters, seed and train_tokens must be >= 0")
        if self.lr_decay_iters is not None and self.lr_decay_iters < 1:
            raise ConfigError(f"lr_decay_iters must be a positive integer or none, got {self.lr_decay_iters}")
        if not 0.0 <= self.min_lr <= self.lr:
            raise ConfigError(f"need 0 <= min_lr <= lr, got min_lr={self.min_lr}, lr={self.lr}")
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise ConfigError(f"beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("weight_decay and grad_clip must be >= 0")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}; got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}; got {self.dtype!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        if not self.muon_lr > 0:
            raise ConfigError(f"muon_lr must be > 0, got {self.muon_lr}")
        if not 0.0 <= self.muon_momentum < 1.0:
            raise ConfigError(f"muon_momentum must be in [0, 1), got {self.muon_momentum}")
        if self.optimizer == "muon" and not self.lr > 0:
            raise ConfigError(f"optimizer=muon needs lr > 0 (Muon's rate follows the schedule of lr), got lr={self.lr}")
        if not isinstance(self.lora_rank, int) or isinstance(self.lora_rank, bool) or self.lora_rank < 0:
            raise ConfigError(f"lora_rank must be 0 (full fine-tuning) or a positive integer, got {self.lora_rank!r}")
        if self.lora_alpha is not None and not self.lora_alpha > 0:
            raise ConfigError(f"lora_alpha must be > 0 (or none for 2 * lora_rank), got {self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")

    @property
    def lora(self) -> dict | None:
        """The LoRA settings ({rank, alpha, dropout, targets}), or None for full fine-tuning."""
        if not self.lora_rank:
            return None
        alpha = self.lora_alpha if self.lora_alpha is not None else 2.0 * self.lora_rank
        return {"rank": self.lora_rank, "alpha": alpha, "dropout": self.lora_dropout, "targets": self.lora_targets}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown training config key(s) {unknown}; known keys: {sorted(f.name for f in fields(cls))}")
        return cls(**values)


# Each preset: model fields and training fields. vocab_size is left out: it comes from the data.
PRESETS: dict[str, dict[str, dict]] = {
    # A small BPE model that learns something real in a few minutes on a 2-core CPU
    # (about 0.5 s a step with an 8192-token vocabulary; 1M tokens in all).
    "tiny": {
        "model": dict(n_layer=4, n_head=4, n_embd=128, block_size=128, dropout=0.0),
        "train": dict(batch_size=16, max_iters=500, lr=2e-3, min_lr=2e-4, warmup_iters=50,
                      eval_interval=100, eval_iters=10, log_interval=10),
    },
    # nanoGPT's CPU recipe for character-level Tiny Shakespeare (val loss about 1.88), with
    # nanoGPT's exact GELU (the tanh form costs 3x as much on a CPU).
    "shakespeare-char": {
        "model": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=False, mlp="gelu_exact"),
        "train": dict(batch_size=12, max_iters=2000, lr=1e-3, min_lr=1e-4, lr_decay_iters=2000,
                      warmup_iters=100, beta2=0.99, eval_interval=250, eval_iters=20, log_interval=10),
    },
    # GPT-2 small (124M) for a GPU: about 0.5M tokens a step, bf16, compiled.
    "gpt2-124m": {
        "model": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, dropout=0.0),
        "train": dict(batch_size=16, grad_accum=32, max_iters=19073, lr=6e-4, min_lr=6e-5,
                      warmup_iters=715, beta2=0.95, weight_decay=0.1, eval_interval=250,
                      eval_iters=20, log_interval=1, dtype="bfloat16", compile=True),
    },
}


def preset(name: str | None) -> tuple[dict, dict]:
    """(model overrides, train overrides) of a preset; no preset is the dataclass defaults."""
    if name is None:
        return {}, {}
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return dict(PRESETS[name]["model"]), dict(PRESETS[name]["train"])


def split_overrides(overrides: dict, model_class: type) -> tuple[dict, dict]:
    """Sort key=value overrides into (model, train) dicts, each value parsed by its field's type.
    model_class: the model's config dataclass (GPTConfig, RNNConfig, EncoderConfig, ...)."""
    model_fields = {f.name: f for f in fields(model_class)}
    train_fields = {f.name: f for f in fields(TrainConfig)}
    model, train = {}, {}
    for key, value in overrides.items():
        if key in train_fields:
            train[key] = parse_value(key, value, train_fields[key].type)
        elif key in model_fields:
            model[key] = parse_value(key, value, model_fields[key].type)
        else:
            raise ConfigError(
                f"unknown config key {key!r}. Training keys: {', '.join(sorted(train_fields))}. "
                f"Model keys: {', '.join(sorted(model_fields))}"
            )
    return model, train


def add_training_arguments(parser, set_help: str = "override a training setting, e.g. --set max_iters=500 lr=1e-4") -> None:
    """The options every training stage's command takes: --set KEY=VALUE..., --optimizer, --resume,
    --no-progress. --optimizer NAME is short for --set optimizer=NAME (it joins the same list)."""
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help=set_help)
    parser.add_argument("--optimizer", dest="overrides", action="append", type=optimizer_setting, metavar="|".join(OPTIMIZERS),
                        help="adamw (default), or muon: Muon for the hidden weight matrices, AdamW for the rest "
                        "(its peak rate: --set muon_lr=...)")
    parser.add_argument("--resume", action="store_true", help="continue the output run from its checkpoint, exactly")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def optimizer_setting(name: str) -> str:
    """--optimizer NAME as the --set item it stands for (TrainConfig checks the name)."""
    return f"optimizer={name}"


def parse_set_args(items: list[str]) -> dict[str, str]:
    """['lr=3e-4', 'n_layer=2'] -> {'lr': '3e-4', 'n_layer': '2'} (values parsed later, by type)."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        overrides[key.strip()] = value.strip()
    return overrides


def parse_value(key: str, value, type_name):
    """Parse a --set string (or check a Python value) against a field type such as "int | None"."""
    type_name = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", str(type_name))
    names = [t.strip() for t in type_name.split("|")]
    base = next(t for t in names if t != "None")
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        if "None" in names:
            return None
        raise ConfigError(f"{key} cannot be none")
    try:
        if base == "bool":
            return _parse_bool(value)
        if base == "int":  # "2000", "2e3" and 2000.0 are all 2000; 2.5 is an error
            number = float(value)
            if isinstance(value, bool) or not number.is_integer():
                raise ValueError
            return int(number)
        if base == "float":
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be {base}, got {value!r}") from None


def _parse_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError
