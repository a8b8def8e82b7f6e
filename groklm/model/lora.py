"""LoRA: fine-tune a big model by training a small low-rank correction to some of its matrices.

Full fine-tuning updates every weight W (out x in) and keeps AdamW's two moments for each: three
copies of the model. LoRA (Hu et al., 2021) freezes W and learns its change as a product of two
thin matrices instead:

    y = W x + b + (alpha / r) * B (A dropout(x))        A: (r x in), B: (out x r), r << in, out

Only A and B train: r * (in + out) numbers per layer instead of in * out. B starts at zero, so
the wrapped model starts out as exactly the base model; A starts random, so the very first
gradient reaches B (were both zero, neither would ever get one). alpha / r keeps the size of
the update roughly independent of the rank chosen, so a learning rate that works at one rank
works at another. Afterwards the correction can be folded in, W' = W + (alpha / r) B A
(`merge_lora`), and the model is an ordinary one again, as fast as before.

Our attention computes q, k and v with one fused matrix (attention.py). A LoRA on that whole
matrix would share one A between q, k and v, which is not what "a LoRA on q_proj and v_proj"
means anywhere else. So a wrapped layer splits its output rows into named *parts* (q, k, v for
the fused matrix; one part for every other layer), each with its own A and B, and only the
parts asked for get adapters. That is exactly separate LoRAs on separate q/k/v matrices.

The adapters are kept in float32 whatever the base weights' dtype, and their product is
computed in float32 (unless autocast lowers every matmul, as mixed-precision training does): a
bfloat16 base halves the memory of the frozen part, while the small trained part, and AdamW's
state for it, keeps full precision.

    from groklm.model.lora import apply_lora, merge_lora, lora_state_dict
    wrapped = apply_lora(model, rank=16, alpha=32, targets=("attn", "mlp"))
    ...train the parameters with requires_grad...
    adapters = lora_state_dict(model)      # a few MB, not the whole model
    merge_lora(model)                      # a plain model again
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from fnmatch import fnmatchcase
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from groklm.errors import CheckpointError, ConfigError
from groklm.model.attention import CausalSelfAttention
from groklm.model.gpt import MLP
from groklm.model.weights import load_weights, save_weights
from groklm.rundir import WEIGHTS_FILE, atomic_path, read_config

# Target groups and the projections in them, named as in Llama (q_proj ... down_proj) so that
# "q,v" means here what it means in every LoRA recipe. GPT-2's MLP has up and down, no gate.
TARGET_GROUPS = {"attn": ("q", "k", "v", "o"), "mlp": ("gate", "up", "down")}
PROJECTIONS = tuple(p for group in TARGET_GROUPS.values() for p in group)
DEFAULT_TARGETS = ("attn", "mlp")
WHOLE = "out"  # the part name of a layer matched by a module-name pattern: all its output rows


class LoRALinear(nn.Module):
    """A frozen linear layer plus low-rank adapters on some parts of its output.

    It holds the base layer's own `weight` and `bias` Parameters (not copies) under the same
    names, so a wrapped model's state dict holds the base tensors by their usual names plus
    `<layer>.lora_A.<part>` and `<layer>.lora_B.<part>`.

    parts: the output rows, in order, as (name, rows); active: the names that get an adapter.
    """

    def __init__(self, base: nn.Linear, parts: list[tuple[str, int]], active: Iterable[str],
                 rank: int, alpha: float, dropout: float):
        super().__init__()
        assert sum(rows for _, rows in parts) == base.out_features, "the parts must cover every output row"
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.parts = list(parts)
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        self.dropout = nn.Dropout(dropout)
        self.enabled = True  # False: the base layer alone (lora_disabled)
        active = set(active)
        device = base.weight.device
        self.lora_A = nn.ParameterDict(
            {name: nn.Parameter(torch.empty(rank, self.in_features, device=device)) for name, _ in parts if name in active}
        )
        self.lora_B = nn.ParameterDict(
            {name: nn.Parameter(torch.zeros(rows, rank, device=device)) for name, rows in parts if name in active}
        )
        for a in self.lora_A.values():
            # nn.Linear's own init (uniform, scaled by fan-in): x -> A x has the usual variance.
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        if not self.enabled:
            return out
        h = self.dropout(x).float()  # the adapters' dtype, whatever the base's
        pieces = []
        for name, rows in self.parts:
            if name in self.lora_A:
                pieces.append((h @ self.lora_A[name].T) @ self.lora_B[name].T)  # (..., r) then (..., rows)
            else:
                pieces.append(h.new_zeros(*h.shape[:-1], rows))  # this part has no adapter
        delta = torch.cat(pieces, dim=-1) if len(pieces) > 1 else pieces[0]
        return out + (self.scale * delta).to(out.dtype)

    def delta_weight(self) -> torch.Tensor:
        """The change the adapters make to the weight, (alpha / r) B A stacked over the parts:
        (out, in) in float32. W + delta_weight() is the merged matrix."""
        rows = []
        for name, size in self.parts:
            if name in self.lora_A:
                rows.append(self.scale * (self.lora_B[name] @ self.lora_A[name]))
            else:
                rows.append(torch.zeros(size, self.in_features, device=self.weight.device))
        return torch.cat(rows, dim=0)

    def merged(self) -> nn.Linear:
        """A plain nn.Linear computing what this layer computes (with its adapters enabled)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            # The sum in float32, then one rounding to the base dtype.
            linear.weight.copy_(self.weight.float() + self.delta_weight())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def extra_repr(self) -> str:
        active = ",".join(self.lora_A.keys())
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, alpha={self.alpha}, parts={active}"


# ---- which layers get adapters --------------------------------------------------------------


def projection_parts(model: nn.Module) -> dict[str, list[tuple[str, int]]]:
    """The linear layers that play a named role -> their output split into (projection, rows).

    Found by what each layer is, not by its name, so every block (and every MoE expert, whose
    experts are MLPs) is covered and nothing else is."""
    roles: dict[str, list[tuple[str, int]]] = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, CausalSelfAttention):
            q_rows, kv_rows = module.n_head * module.head_dim, module.n_kv_head * module.head_dim
            roles[prefix + "qkv"] = [("q", q_rows), ("k", kv_rows), ("v", kv_rows)]
            roles[prefix + "proj"] = [("o", module.proj.out_features)]
        elif isinstance(module, MLP):
            roles[prefix + "fc"] = [("up", module.fc.out_features)]
            if module.gate is not None:
                roles[prefix + "gate"] = [("gate", module.gate.out_features)]
            roles[prefix + "proj"] = [("down", module.proj.out_features)]
    return roles


def plan_targets(model: nn.Module, targets: Iterable[str]) -> dict[str, tuple[list[tuple[str, int]], set[str]]]:
    """targets -> {layer name: (its parts, the parts to adapt)}.

    A target is a group ("attn", "mlp"), a projection ("q", "k", "v", "o", "gate", "up",
    "down"), or else a pattern on module names (fnmatch: "lm_head", "blocks.0.*", "*.mlp.fc";
    a pattern also matches at any depth, so "attn.proj" means "*.attn.proj"), which adapts the
    whole matrix. Each target must match at least one linear layer."""
    roles = projection_parts(model)
    linears = {name: module for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    plan: dict[str, tuple[list[tuple[str, int]], set[str]]] = {}
    for target in targets:
        target = target.strip()
        matched = False
        if target in TARGET_GROUPS or target in PROJECTIONS:
            wanted = set(TARGET_GROUPS.get(target, (target,)))
            for name, parts in roles.items():
                hits = wanted & {part for part, _ in parts}
                if hits and name in linears:
                    plan.setdefault(name, (parts, set()))[1].update(hits)
                    matched = True
        else:
            for name, module in linears.items():
                if fnmatchcase(name, target) or fnmatchcase(name, "*." + target):
                    parts = roles.get(name, [(WHOLE, module.out_features)])
                    plan.setdefault(name, (parts, set()))[1].update(part for part, _ in parts)
                    matched = True
        if not matched:
            some = ", ".join(list(linears)[:6])
            raise ConfigError(
                f"LoRA target {target!r} matches no linear layer of this model. Use a group "
                f"({', '.join(TARGET_GROUPS)}), a projection ({', '.join(PROJECTIONS)}) or a pattern "
                f"on layer names such as {some or '(this model has no linear layers)'}"
            )
    return plan


def parse_targets(targets: str | Iterable[str]) -> tuple[str, ...]:
    """"attn,mlp" or ["attn", "mlp"] -> ("attn", "mlp"), the form --set lora_targets= takes."""
    items = targets.split(",") if isinstance(targets, str) else list(targets)
    items = tuple(item.strip() for item in items if item.strip())
    if not items:
        raise ConfigError("lora_targets is empty: name at least one of attn, mlp, q, k, v, o, gate, up, down")
    return items


# ---- wrapping, merging, saving --------------------------------------------------------------


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: module for name, module in model.named_modules() if isinstance(module, LoRALinear)}


def apply_lora(model: nn.Module, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0,
               targets: str | Iterable[str] = DEFAULT_TARGETS) -> list[str]:
    """Freeze every weight of `model` and wrap the target layers in LoRALinear, in place.

    Returns the names of the wrapped layers. Afterwards the only parameters with
    requires_grad are the adapters' A and B (a stage that trains a head of its own, such as a
    reward model's, unfreezes that head itself)."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"lora_rank must be a whole number >= 1, got {rank!r}")
    if not alpha > 0:
        raise ConfigError(f"lora_alpha must be > 0, got {alpha!r} (alpha / rank scales the adapters' output)")
    if not 0 <= dropout < 1:
        raise ConfigError(f"lora_dropout must be in [0, 1), got {dropout!r}")
    if lora_layers(model):
        raise ConfigError("this model already has LoRA adapters: merge them (merge_lora) before adding new ones")
    plan = plan_targets(model, parse_targets(targets))

    shared = shared_weights(model)
    for name, (parts, active) in plan.items():
        layer = model.get_submodule(name)
        if id(layer.weight) in shared:
            raise ConfigError(
                f"cannot put LoRA on {name}: its weight is shared with another layer (tied embeddings), "
                f"so merging would change both. Leave {name} out of lora_targets"
            )
        for part, rows in parts:
            if part in active and rank > min(layer.in_features, rows):
                raise ConfigError(
                    f"lora_rank={rank} is larger than {name}" + (f" ({part})" if len(parts) > 1 else "")
                    + f", a {rows} x {layer.in_features} matrix: a rank-{rank} update cannot be smaller than "
                    f"the matrix itself. Use lora_rank <= {min(layer.in_features, rows)}"
                )

    for param in model.parameters():
        param.requires_grad_(False)
    for name, (parts, active) in plan.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), parts, active, rank, alpha, dropout))
    return sorted(plan)


def shared_weights(model: nn.Module) -> set[int]:
    """ids of parameters that appear under more than one name (tied embeddings)."""
    seen: dict[int, int] = {}
    for _, param in model.named_parameters(remove_duplicate=False):
        seen[id(param)] = seen.get(id(param), 0) + 1
    return {key for key, count in seen.items() if count > 1}


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its weight, W' = W + (alpha / r) B A, replacing each LoRALinear
    with a plain nn.Linear, in place. All parameters are trainable again, as in a fresh model.
    Returns the model."""
    for name, layer in lora_layers(model).items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.merged())
    for param in model.parameters():
        param.requires_grad_(True)
    return model


@contextmanager
def lora_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block the model computes as its base alone (the adapters are skipped, not
    zeroed): DPO's reference model without a second copy of the weights."""
    layers = list(lora_layers(model).values())
    before = [layer.enabled for layer in layers]
    for layer in layers:
        layer.enabled = False
    try:
        yield model
    finally:
        for layer, state in zip(layers, before):
            layer.enabled = state


def is_lora_key(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapters' tensors, by their names in the model's state dict: what a LoRA run
    saves instead of the whole model."""
    return {name: tensor for name, tensor in model.state_dict().items() if is_lora_key(name)}


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The frozen base's tensors, by the names an unwrapped model gives them."""
    return {name: tensor for name, tensor in model.state_dict().items() if not is_lora_key(name)}


def load_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy saved adapters into a model wrapped the same way (same targets, same rank).

    Strict: every adapter must be there with its shape, and nothing else."""
    expected = lora_state_dict(model)
    if not expected:
        raise CheckpointError("this model has no LoRA adapters to load into: apply_lora it first, with the saved settings")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(n for n in set(expected) & set(state) if tuple(state[n].shape) != tuple(expected[n].shape))
    if missing or unexpected or wrong:
        problems = []
        for label, names in (("missing", missing), ("unexpected", unexpected), ("of another shape", wrong)):
            if names:
                problems.append(f"{len(names)} {label} (e.g. {names[0]})")
        raise CheckpointError(
            "the saved adapters do not fit this model: " + "; ".join(problems)
            + ". Apply LoRA with the rank and targets they were trained with"
        )
    with torch.no_grad():
        for name, tensor in expected.items():
            tensor.copy_(state[name])


# ---- LoRA run directories --------------------------------------------------------------------
#
# A LoRA run stores only what it trained: RUN/adapters.safetensors (and the same file in its
# checkpoint, beside the adapters' optimizer state), never a copy of the base. Its config.json
# has a "lora" section naming the base run and the SHA-256 of the base's weights file, so that
# loading refuses a base that is gone or has changed instead of silently adding the adapters
# to weights they were not trained against:
#
#   "lora": {"rank": 16, "alpha": 32.0, "dropout": 0.0, "targets": "attn,mlp",
#            "base": "runs/smollm2", "base_sha256": "9f2c..."}

ADAPTERS_FILE = "adapters.safetensors"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def lora_section(base_run: str | os.PathLike, rank: int, alpha: float, dropout: float, targets: str | Iterable[str]) -> dict:
    """The "lora" section of a fresh LoRA run's config.json on top of `base_run`."""
    base = Path(base_run)
    if "lora" in read_config(base):
        raise ConfigError(
            f"{base} is itself a LoRA run: merge it first (groklm merge {base} --out MERGED) "
            "and train the new adapters on the merged run"
        )
    return {"rank": rank, "alpha": float(alpha), "dropout": float(dropout), "targets": ",".join(parse_targets(targets)),
            "base": str(base.resolve()), "base_sha256": file_sha256(base / WEIGHTS_FILE)}


def check_lora_base(section: dict, run_dir: str | os.PathLike) -> Path:
    """The base run of a LoRA run, checked to be there and unchanged since the adapters were trained."""
    base = Path(section["base"])
    weights = base / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(
            f"{run_dir} is a LoRA run on top of {base}, which is missing ({weights} does not exist). "
            "Put the base run back at that path (or edit the \"base\" in its config.json to where it now is)"
        )
    if file_sha256(weights) != section["base_sha256"]:
        raise CheckpointError(
            f"{run_dir} holds LoRA adapters trained on {base}, but {weights} has changed since: "
            "the adapters would be added to weights they were not trained for. Restore the original base run"
        )
    return base


def apply_lora_section(model: nn.Module, section: dict) -> list[str]:
    return apply_lora(model, rank=section["rank"], alpha=section["alpha"], dropout=section["dropout"],
                      targets=section["targets"])


def trained_extras(model: nn.Module) -> dict[str, nn.Parameter]:
    """Parameters of a LoRA model that train besides the adapters: what the stage left
    trainable outside the wrapped network (a reward model's head), by state-dict name."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad and not is_lora_key(name)}


def save_trained_weights(model: nn.Module, folder: str | os.PathLike) -> Path:
    """What a run keeps of its model: for a LoRA model what it trains (the adapters, and any
    trainable extra such as a reward head), else every weight."""
    folder = Path(folder)
    if not lora_layers(model):
        save_weights(model, folder / WEIGHTS_FILE)
        return folder / WEIGHTS_FILE
    state = {**lora_state_dict(model), **trained_extras(model)}
    with atomic_path(folder / ADAPTERS_FILE) as tmp:
        save_file({name: t.detach().contiguous() for name, t in state.items()}, str(tmp))
    return folder / ADAPTERS_FILE


def load_trained_weights(model: nn.Module, folder: str | os.PathLike) -> None:
    """The inverse of save_trained_weights (a LoRA model must be wrapped already, and the same
    extras left trainable)."""
    folder = Path(folder)
    if not lora_layers(model):
        load_weights(model, folder / WEIGHTS_FILE)
        return
    path = folder / ADAPTERS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: this LoRA run has no saved adapters")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is corrupt: {error}") from error
    extras = trained_extras(model)
    saved_extras = {name: t for name, t in state.items() if not is_lora_key(name)}
    if set(saved_extras) != set(extras) or any(t.shape != extras[n].shape for n, t in saved_extras.items()):
        raise CheckpointError(f"{path} holds trained tensors {sorted(saved_extras)} but this model trains "
                              f"{sorted(extras)} besides its adapters: it was saved from another kind of model")
    load_lora_state_dict(model, {name: t for name, t in state.items() if is_lora_key(name)})
    with torch.no_grad():
        for name, tensor in saved_extras.items():
            extras[name].copy_(tensor)
