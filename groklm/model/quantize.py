"""Weight-only quantization for decoding on a CPU: int8 per output row, int4 per group of 32.

Decoding one token multiplies a single row of activations by every weight matrix of the model,
so a decode step costs what it takes to read the weights: 540 MB in float32 for a 135M-parameter
model, for each token. Storing the weights in fewer bits and widening them inside the matmul
kernel cuts that traffic: int8 reads a quarter of it, int4 an eighth. Activations stay in
floating point (bfloat16 inside the kernel), hence "weight-only".

    int8:  W[o, i] ~= q[o, i] * scale[o]                   q in [-127, 127], one scale per output row
    int4:  W[o, i] ~= (q[o, i] - 8) * scale[o, g] + zero[o, g]   q in [0, 15], per group g of 32 inputs

int4 is the layout of llama.cpp's Q4_1 (a scale and a minimum per block of 32 weights), so a
model that came from a Q4_1 GGUF file, as the packaged SmolLM2 does, is stored again in nearly
the same grid it was published in. The kernels are PyTorch's own CPU kernels
(`_weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`). What each costs in quality (logit
difference, eval accuracy) and gains in speed is in docs/performance.md.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from groklm.errors import ConfigError
from groklm.model.lora import LoRALinear

QUANTIZATIONS = ("int8", "int4")
INT4_GROUP = 32  # inputs sharing one scale and zero: Q4_1's block
# A layer with fewer outputs is a handful of vectors (a mixture-of-depths router scores a token
# with one): nothing to gain from packing it, and its one score decides a whole block's route.
MIN_QUANTIZED_OUTPUTS = 8


class QuantizedLinear(nn.Module):
    """A Linear layer whose weight is stored in int8 or int4; y = x W^T (+ b), computed in bfloat16."""

    def __init__(self, linear: nn.Linear, kind: str):
        super().__init__()
        if kind not in QUANTIZATIONS:
            raise ConfigError(f"weight quantization must be one of {', '.join(QUANTIZATIONS)}; got {kind!r}")
        self.kind, self.in_features, self.out_features = kind, linear.in_features, linear.out_features
        packed, scales = (pack_int8 if kind == "int8" else pack_int4)(linear.weight.detach().float())
        self.register_buffer("packed", packed)
        self.register_buffer("scales", scales)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._matmul(x.reshape(-1, self.in_features).to(torch.bfloat16))
        y = y.to(x.dtype).view(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def _matmul(self, rows: torch.Tensor) -> torch.Tensor:
        """(N, in) bfloat16 -> (N, out): the kernel, widening the stored weight as it goes."""
        if self.kind == "int8":
            return torch.ops.aten._weight_int8pack_mm(rows, self.packed, self.scales)
        return torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.packed, INT4_GROUP, self.scales)

    def dequantized(self) -> torch.Tensor:
        """The weight the kernel multiplies by, in float32 (out, in): to measure the rounding."""
        return self._matmul(torch.eye(self.in_features, dtype=torch.bfloat16)).float().T.contiguous()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.kind}"


def pack_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) float weight -> (int8 weight, one bfloat16 scale per output row): each row's
    largest magnitude maps to 127. The scale is rounded to bfloat16 (what the kernel reads)
    before the weights are rounded against it, so every weight lands within half a step."""
    scale = (weight.abs().amax(dim=1).clamp(min=1e-12) / 127).to(torch.bfloat16)
    q = torch.round(weight / scale.float()[:, None]).clamp(-127, 127)
    return q.to(torch.int8), scale


def pack_int4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) float weight -> (the kernel's packed int4 tensor, bfloat16 scales and zeros (in/32, out, 2)).

    Each group of 32 inputs of a row spans [lo, hi] with 16 evenly spaced levels; the kernel
    computes (q - 8) * scale + zero, so zero = lo + 8 * scale. As in pack_int8, the levels are
    chosen against the bfloat16 scale and zero the kernel will read."""
    out_features, in_features = weight.shape
    groups = weight.view(out_features, in_features // INT4_GROUP, INT4_GROUP)
    lo, hi = groups.amin(dim=-1), groups.amax(dim=-1)
    scale = ((hi - lo) / 15).clamp(min=1e-12).to(torch.bfloat16).float()
    zero = (lo + 8 * scale).to(torch.bfloat16).float()
    q = torch.round((groups - zero[..., None]) / scale[..., None] + 8).clamp(0, 15).to(torch.int32)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.view(out_features, in_features), 1)
    scales_and_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()
    return packed, scales_and_zeros.to(torch.bfloat16)


def quantize_weights(model: nn.Module, kind: str) -> int:
    """Replace every nn.Linear of `model` (a GPT, in place) by a QuantizedLinear; returns how many
(all but those of fewer than MIN_QUANTIZED_OUTPUTS outputs).

    For generation only: the quantized weights have no gradient. Embedding tables stay as they
    are (a lookup reads one row per token), while a head tied to the token table gets a
    quantized copy, since the head multiplies by all of it at every step. With int4 the head
    keeps 8 bits: its rounding lands directly on the logits (on SmolLM2, int4 everywhere gives
    a mean KL of 0.057 from the float model, int4 blocks with an int8 head 0.003), and it is
    the one matrix llama.cpp's own 4-bit files keep wider too."""
    if kind not in QUANTIZATIONS:
        raise ConfigError(f"weight quantization must be one of {', '.join(QUANTIZATIONS)}; got {kind!r}")
    param = next(model.parameters())
    if param.device.type != "cpu":
        raise ConfigError(f"weight-only {kind} uses PyTorch's CPU kernels; this model is on {param.device}: "
                          "leave --quantize out on a GPU")
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ConfigError("this model carries LoRA adapters: merge them first (groklm merge RUN --out MERGED), then quantize")
    head = getattr(model, "lm_head", None)
    linears = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if isinstance(child, nn.Linear) and child.out_features >= MIN_QUANTIZED_OUTPUTS]
    if kind == "int4":
        odd = [f"{name} ({child.in_features} inputs)" for _, name, child in linears
               if child is not head and child.in_features % INT4_GROUP]
        if odd:
            raise ConfigError(f"int4 needs layers whose inputs come in groups of {INT4_GROUP}; not {', '.join(odd[:3])}: use int8")
    for parent, name, child in linears:
        setattr(parent, name, QuantizedLinear(child, "int8" if child is head else kind))
    model.requires_grad_(False)
    return len(linears)
