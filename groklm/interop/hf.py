"""Model weights to and from Hugging Face `transformers` checkpoints (GPT-2 and Llama shapes).

Our GPT covers both families with one set of module names; this file only renames tensors
and rewrites configs. Four differences are worth knowing:

  * GPT-2 stores its linear layers as `Conv1D`, whose weight is (in, out): the transpose of
    `nn.Linear`'s (out, in).
  * GPT-2 fuses q, k, v into one `c_attn`, as we do; Llama keeps `q_proj`, `k_proj`, `v_proj`
    apart, so we split our fused `qkv` rows (and concatenate them on the way back).
  * Our SwiGLU is proj(silu(gate(x)) * fc(x)); Llama calls these gate_proj, up_proj, down_proj.
  * A "missing" bias is the same function as a zero bias, and a key/value head shared by a
    group of query heads is the same function as that head copied into each of them. So a
    bias-free or grouped-query GPT-2-shaped run still exports exactly (zeros, copies), and a
    Llama with biases on only some layers imports exactly.

Nothing here imports `transformers`: the configs are plain JSON and the weights safetensors,
so export works in an install without it. The tests load the results with `transformers`.

Import stops at objects (`load_hf_dir`: model, tokenizer, summary); imports.py writes the run,
the same way for a folder, a GGUF file or a download.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from groklm.errors import CheckpointError, ConfigError
from groklm.interop.hf_tokenizer import read_hf_tokenizer, write_hf_tokenizer
from groklm.model.arch import load_model
from groklm.model.config import GPTConfig
from groklm.model.gpt import GPT
from groklm.model.lora import merge_lora
from groklm.rundir import TOKENIZER_DIR, atomic_path, read_config, read_json, write_json
from groklm.tokenizer import load_tokenizer

SHAPES = {  # field -> the values the family can hold
    "gpt2": dict(pos=("learned",), norm=("layernorm",), mlp=("gelu", "gelu_exact")),
    "llama": dict(pos=("rope",), norm=("rmsnorm",), mlp=("swiglu",)),
}
LLAMA_FAMILY = ("llama", "mistral", "qwen2")  # same tensors and maths as Llama
# GPT-2's activation_function -> our mlp: transformers' names for the tanh GELU, and the exact one.
GPT2_GELUS = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu": "gelu_exact"}


def family_of(config: GPTConfig) -> str:
    """Which HF architecture can hold this model: "gpt2" or "llama"; otherwise a ConfigError."""
    # Our experts and depth routers are layers neither architecture (nor llama.cpp's) has.
    if config.moe_experts:
        raise ConfigError(f"this is a mixture-of-experts model ({config.moe_experts} experts); groklm exports dense "
                          "models only (the GPT-2 and Llama layouts have no experts, llama.cpp's MoE layouts differ)")
    if config.mod_capacity:
        raise ConfigError(f"this is a mixture-of-depths model (mod_capacity={config.mod_capacity}); groklm exports "
                          "dense models only (no exported architecture routes tokens around blocks)")
    for family, shape in SHAPES.items():
        if all(getattr(config, key) in values for key, values in shape.items()):
            return family
    have = f"pos={config.pos}, norm={config.norm}, mlp={config.mlp}"
    raise ConfigError(
        f"cannot export a model with {have}: Hugging Face has no matching architecture. "
        "Exportable shapes: GPT-2 (pos=learned, norm=layernorm, mlp=gelu or gelu_exact) and "
        "Llama (pos=rope, norm=rmsnorm, mlp=swiglu)."
    )


# ---- export: our GPT -> HF -----------------------------------------------------------------


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def export_model(
    model, out_dir: str | Path, bos_id: int | None = None, eos_id: int | None = None, dtype: str = "float32"
) -> str:
    """Write `model` as an HF checkpoint (config.json + model.safetensors); returns the family."""
    family = family_of(model.config)
    if family == "gpt2":
        hf_config, tensors = gpt2_config(model.config), gpt2_tensors(model)
    else:
        hf_config, tensors = llama_config(model.config), llama_tensors(model)
    hf_config.update(bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=None, torch_dtype=dtype)
    out_dir = Path(out_dir)
    write_json(out_dir / "config.json", hf_config)
    # safetensors refuses tensors that share memory (views, tied weights): store plain copies.
    tensors = {name: t.detach().to("cpu", DTYPES[dtype]).contiguous().clone() for name, t in tensors.items()}
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    return family


def gpt2_config(c: GPTConfig) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.block_size,
        "n_embd": c.n_embd,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": c.mlp_hidden,
        "activation_function": "gelu" if c.mlp == "gelu_exact" else "gelu_new",
        "layer_norm_epsilon": c.norm_eps,
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.dropout,
        "scale_attn_weights": True,
        "tie_word_embeddings": c.tie_embeddings,
    }


def llama_config(c: GPTConfig) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": c.vocab_size,
        "hidden_size": c.n_embd,
        "intermediate_size": c.mlp_hidden,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_kv_head,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": c.block_size,
        "rms_norm_eps": c.norm_eps,
        # transformers 4 reads rope_theta, transformers 5 reads rope_parameters.
        "rope_theta": c.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
        "attention_bias": c.bias,
        "mlp_bias": c.bias,
        "attention_dropout": c.dropout,
        "tie_word_embeddings": c.tie_embeddings,
    }


def split_qkv(tensor: torch.Tensor, c: GPTConfig) -> list[torch.Tensor]:
    """Our fused qkv rows (weight or bias) -> [q, k, v]."""
    sizes = [c.n_head * c.head_dim, c.n_kv_head * c.head_dim, c.n_kv_head * c.head_dim]
    return list(tensor.split(sizes, dim=0))


def repeat_kv_heads(tensor: torch.Tensor, c: GPTConfig) -> torch.Tensor:
    """k or v rows of n_kv_head heads -> n_head heads, each kv head copied to its query group."""
    heads = tensor.view(c.n_kv_head, c.head_dim, *tensor.shape[1:])
    return heads.repeat_interleave(c.n_head // c.n_kv_head, dim=0).reshape(c.n_head * c.head_dim, *tensor.shape[1:])


def gpt2_tensors(model) -> dict[str, torch.Tensor]:
    c, ours = model.config, model.state_dict()

    def bias(name: str, size: int) -> torch.Tensor:
        return ours.get(name, torch.zeros(size))  # bias=False: GPT-2 always has one, so zero it

    def conv1d(src: str, dst: str) -> None:  # nn.Linear (out, in) -> Conv1D (in, out)
        weight = ours[f"{src}.weight"]
        out[f"{dst}.weight"] = weight.t()
        out[f"{dst}.bias"] = bias(f"{src}.bias", weight.size(0))

    def layernorm(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = ours[f"{src}.weight"]
        out[f"{dst}.bias"] = bias(f"{src}.bias", c.n_embd)

    out = {"transformer.wte.weight": ours["wte.weight"], "transformer.wpe.weight": ours["wpe.weight"]}
    for i in range(c.n_layer):
        src, dst = f"blocks.{i}", f"transformer.h.{i}"
        layernorm(f"{src}.ln_1", f"{dst}.ln_1")
        # GPT-2 has one kv head per query head: copy shared kv heads out to every query head.
        parts = {"weight": ours[f"{src}.attn.qkv.weight"]}
        if f"{src}.attn.qkv.bias" in ours:
            parts["bias"] = ours[f"{src}.attn.qkv.bias"]
        for kind, tensor in parts.items():
            q, k, v = split_qkv(tensor, c)
            if c.n_kv_head != c.n_head:
                k, v = repeat_kv_heads(k, c), repeat_kv_heads(v, c)
            parts[kind] = torch.cat([q, k, v], dim=0)
        out[f"{dst}.attn.c_attn.weight"] = parts["weight"].t()
        out[f"{dst}.attn.c_attn.bias"] = parts.get("bias", torch.zeros(3 * c.n_embd))
        conv1d(f"{src}.attn.proj", f"{dst}.attn.c_proj")
        layernorm(f"{src}.ln_2", f"{dst}.ln_2")
        conv1d(f"{src}.mlp.fc", f"{dst}.mlp.c_fc")
        conv1d(f"{src}.mlp.proj", f"{dst}.mlp.c_proj")
    layernorm("ln_f", "transformer.ln_f")
    if not c.tie_embeddings:
        out["lm_head.weight"] = ours["lm_head.weight"]
    return out


# Our name -> Llama's name for the linear layers that map one to one.
LLAMA_LINEARS = {
    "attn.proj": "self_attn.o_proj",
    "mlp.gate": "mlp.gate_proj",
    "mlp.fc": "mlp.up_proj",
    "mlp.proj": "mlp.down_proj",
}


def llama_tensors(model) -> dict[str, torch.Tensor]:
    c, ours = model.config, model.state_dict()
    out = {"model.embed_tokens.weight": ours["wte.weight"], "model.norm.weight": ours["ln_f.weight"]}
    for i in range(c.n_layer):
        src, dst = f"blocks.{i}", f"model.layers.{i}"
        for kind in ("weight", "bias") if c.bias else ("weight",):
            q, k, v = split_qkv(ours[f"{src}.attn.qkv.{kind}"], c)
            out[f"{dst}.self_attn.q_proj.{kind}"] = q
            out[f"{dst}.self_attn.k_proj.{kind}"] = k
            out[f"{dst}.self_attn.v_proj.{kind}"] = v
            for ours_name, hf_name in LLAMA_LINEARS.items():
                out[f"{dst}.{hf_name}.{kind}"] = ours[f"{src}.{ours_name}.{kind}"]
        out[f"{dst}.input_layernorm.weight"] = ours[f"{src}.ln_1.weight"]
        out[f"{dst}.post_attention_layernorm.weight"] = ours[f"{src}.ln_2.weight"]
    if not c.tie_embeddings:
        out["lm_head.weight"] = ours["lm_head.weight"]
    return out


# ---- import: HF -> our GPT ------------------------------------------------------------------


def read_hf_config(hf_dir: Path) -> dict:
    path = hf_dir / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{hf_dir} has no config.json: not a Hugging Face model directory")
    return read_json(path)


def gpt_config_from_hf(hf: dict, block_size: int | None = None) -> GPTConfig:
    """An HF config.json (as a dict) -> the GPTConfig of the same network, or a ConfigError."""
    model_type = hf.get("model_type")
    try:
        if model_type == "gpt2":
            return gpt2_to_config(hf, block_size)
        if model_type in LLAMA_FAMILY:
            return llama_to_config(hf, block_size)
    except KeyError as error:
        raise CheckpointError(f"the {model_type} config.json lacks the key {error}") from error
    raise ConfigError(
        f"cannot import model_type={model_type!r}: supported are gpt2 and the Llama family "
        f"({', '.join(LLAMA_FAMILY)})"
    )


def _unsupported(hf: dict, what: str) -> ConfigError:
    return ConfigError(f"cannot import this {hf.get('model_type')} model: {what}")


def gpt2_to_config(hf: dict, block_size: int | None) -> GPTConfig:
    if hf.get("activation_function", "gelu_new") not in GPT2_GELUS:
        raise _unsupported(hf, f"activation {hf['activation_function']!r} (only GELU, tanh or exact, is supported)")
    if not hf.get("scale_attn_weights", True) or hf.get("scale_attn_by_inverse_layer_idx", False):
        raise _unsupported(hf, "non-standard attention scaling")
    if hf.get("add_cross_attention", False):
        raise _unsupported(hf, "cross-attention")
    positions = hf.get("n_positions", 1024)
    if block_size and block_size > positions:  # a learned position table cannot grow
        raise ConfigError(f"--block-size {block_size} is longer than the model's {positions} positions")
    return GPTConfig(
        vocab_size=hf["vocab_size"],
        block_size=block_size or positions,
        n_layer=hf["n_layer"],
        n_head=hf["n_head"],
        n_embd=hf["n_embd"],
        bias=True,
        pos="learned",
        norm="layernorm",
        mlp=GPT2_GELUS[hf.get("activation_function", "gelu_new")],
        tie_embeddings=hf.get("tie_word_embeddings", True),
        mlp_hidden=hf.get("n_inner") or 4 * hf["n_embd"],
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
    )


def llama_to_config(hf: dict, block_size: int | None) -> GPTConfig:
    n_embd, n_head = hf["hidden_size"], hf["num_attention_heads"]
    max_positions = hf.get("max_position_embeddings", 2048)
    block_size = block_size or max_positions
    if hf.get("hidden_act", "silu") != "silu":
        raise _unsupported(hf, f"activation {hf['hidden_act']!r} (only silu is supported)")
    if hf.get("head_dim") not in (None, n_embd // n_head):
        raise _unsupported(hf, f"head_dim={hf['head_dim']} differs from hidden_size/num_attention_heads")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default" or rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) != 1.0:
        raise _unsupported(hf, f"rope type {rope_type!r} (only plain RoPE is supported)")
    window = hf.get("sliding_window")
    if window is not None and hf.get("use_sliding_window", True) and window < block_size:
        raise _unsupported(hf, f"sliding-window attention ({window} < block size {block_size}); "
                               f"import with --block-size {window} or less")
    return GPTConfig(
        vocab_size=hf["vocab_size"],
        block_size=block_size,
        n_layer=hf["num_hidden_layers"],
        n_head=n_head,
        n_kv_head=hf.get("num_key_value_heads") or n_head,
        n_embd=n_embd,
        # One switch for every linear layer: any bias in the checkpoint turns it on, and the
        # layers that have none get zeros (the same function). Qwen2 has q/k/v biases
        # without saying so in its config.
        bias=bool(hf.get("attention_bias") or hf.get("mlp_bias") or hf["model_type"] == "qwen2"),
        pos="rope",
        norm="rmsnorm",
        mlp="swiglu",
        tie_embeddings=hf.get("tie_word_embeddings", False),
        mlp_hidden=hf["intermediate_size"],
        rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        norm_eps=hf.get("rms_norm_eps", 1e-6),
    )


def read_hf_tensors(hf_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors checkpoint: one file, or shards listed in an index."""
    single, index = hf_dir / "model.safetensors", hf_dir / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise CheckpointError(f"{index} is not a valid shard index: {error}") from error
        files = [hf_dir / name for name in sorted(set(weight_map.values()))]
    else:
        pickled = [p.name for p in hf_dir.glob("*.bin")]
        hint = f" (found {pickled}: pickle checkpoints are not loaded, as they can run code)" if pickled else ""
        raise CheckpointError(f"{hf_dir} has no model.safetensors or model.safetensors.index.json{hint}")
    tensors = {}
    for path in files:
        if not path.is_file():
            raise CheckpointError(f"shard {path} listed in the index does not exist")
        try:
            tensors.update(load_file(str(path)))
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{path} is corrupt: {error}") from error
    return tensors


def state_dict_from_hf(tensors: dict[str, torch.Tensor], config: GPTConfig, family: str) -> dict:
    """HF tensor names -> ours (float32), checked complete; the inverse of *_tensors above."""
    # Checkpoints differ in their prefix ("transformer.h.0" vs "h.0"): drop it.
    prefix = "transformer." if family == "gpt2" else "model."
    tensors = {name.removeprefix(prefix): t.float() for name, t in tensors.items()}

    def take(name: str, default: torch.Tensor | None = None) -> torch.Tensor:
        if name in tensors:
            return tensors[name]
        if default is not None:
            return default
        raise CheckpointError(f"the checkpoint has no tensor {name!r}")

    ours = gpt2_state(take, config) if family == "gpt2" else llama_state(take, config)
    ours["lm_head.weight"] = ours["wte.weight"] if config.tie_embeddings else take("lm_head.weight")
    return ours


def gpt2_state(take, c: GPTConfig) -> dict:
    ours = {"wte.weight": take("wte.weight"), "wpe.weight": take("wpe.weight")[: c.block_size]}
    layers = {"ln_1": "ln_1", "ln_2": "ln_2", "attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj",
              "mlp.fc": "mlp.c_fc", "mlp.proj": "mlp.c_proj"}
    for i in range(c.n_layer):
        for src, dst in layers.items():
            weight = take(f"h.{i}.{dst}.weight")
            # Conv1D (in, out) -> Linear (out, in); norm weights are 1-D and stay as they are.
            ours[f"blocks.{i}.{src}.weight"] = weight.t() if weight.ndim == 2 else weight
            ours[f"blocks.{i}.{src}.bias"] = take(f"h.{i}.{dst}.bias")
    ours["ln_f.weight"], ours["ln_f.bias"] = take("ln_f.weight"), take("ln_f.bias")
    return ours


def llama_state(take, c: GPTConfig) -> dict:
    ours = {"wte.weight": take("embed_tokens.weight"), "ln_f.weight": take("norm.weight")}
    for i in range(c.n_layer):
        src, dst = f"layers.{i}", f"blocks.{i}"
        ours[f"{dst}.ln_1.weight"] = take(f"{src}.input_layernorm.weight")
        ours[f"{dst}.ln_2.weight"] = take(f"{src}.post_attention_layernorm.weight")
        qkv = [take(f"{src}.self_attn.{p}_proj.weight") for p in "qkv"]
        ours[f"{dst}.attn.qkv.weight"] = torch.cat(qkv, dim=0)
        for ours_name, hf_name in LLAMA_LINEARS.items():
            ours[f"{dst}.{ours_name}.weight"] = take(f"{src}.{hf_name}.weight")
        if c.bias:  # layers without a bias in the checkpoint get a zero one
            biases = [take(f"{src}.self_attn.{p}_proj.bias", torch.zeros(w.size(0))) for p, w in zip("qkv", qkv)]
            ours[f"{dst}.attn.qkv.bias"] = torch.cat(biases, dim=0)
            for ours_name, hf_name in LLAMA_LINEARS.items():
                rows = ours[f"{dst}.{ours_name}.weight"].size(0)
                ours[f"{dst}.{ours_name}.bias"] = take(f"{src}.{hf_name}.bias", torch.zeros(rows))
    return ours


def load_hf_model(hf_dir: str | Path, block_size: int | None = None, dtype: str = "float32"):
    """A local HF checkpoint directory -> our GPT (eval mode, `dtype` weights) with the same weights."""
    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise CheckpointError(f"{hf_dir} is not a directory")
    hf = read_hf_config(hf_dir)
    config = gpt_config_from_hf(hf, block_size)
    family = "gpt2" if hf["model_type"] == "gpt2" else "llama"
    state = state_dict_from_hf(read_hf_tensors(hf_dir), config, family)
    model = GPT(config).to(DTYPES[dtype])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{hf_dir} does not match its config.json: {error}") from error
    return model.eval()


def load_hf_dir(hf_dir: str | Path, *, dtype: str = "float32", block_size: int | None = None,
                chat_template: str | None = None):
    """A local HF model folder -> (our GPT, its tokenizer, a summary for the run's config).

    The tokenizer keeps every token at its original id, with the model's conventions (end
    token, chat template); `chat_template` replaces the folder's own template."""
    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise CheckpointError(f"{hf_dir} is not a directory (import reads a local checkpoint folder)")
    if dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"dtype must be float32 or bfloat16, got {dtype!r}")
    if not (hf_dir / "tokenizer.json").is_file():  # check before the slow part
        raise CheckpointError(
            f"{hf_dir} has no tokenizer.json (the fast-tokenizer file); a run needs its tokenizer"
        )
    hf = read_hf_config(hf_dir)
    config = gpt_config_from_hf(hf, block_size)  # refuse what we cannot run before reading weights
    check_vocab_fits(hf_dir / "tokenizer.json", config.vocab_size)
    tokenizer = read_hf_tokenizer(hf_dir)  # with tokenizer_config.json's end tokens and chat template
    largest = max([tokenizer.vocab_size - 1, *tokenizer.special_tokens.values()])
    if largest >= config.vocab_size:
        raise CheckpointError(f"the tokenizer of {hf_dir} has ids up to {largest}, but the model has only "
                              f"{config.vocab_size} embeddings; the checkpoint's tokenizer and model do not belong together")
    if chat_template is not None:
        tokenizer = tokenizer.with_conventions(dataclasses.replace(tokenizer.conventions, chat_template=chat_template))
    model = load_hf_model(hf_dir, block_size, dtype)
    summary = {"format": "hf", "path": str(hf_dir.resolve()), "architecture": hf.get("model_type"),
               "model_type": hf.get("model_type"), "quantization": None}
    return model, tokenizer, summary


def check_vocab_fits(tokenizer_json: Path, vocab_size: int) -> None:
    """Every id the checkpoint's own tokenizer uses must have a row in the model's embedding."""
    data = read_json(tokenizer_json)
    try:
        ids = [*data["model"]["vocab"].values(), *(t["id"] for t in data.get("added_tokens") or [])]
    except (KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{tokenizer_json} is not a tokenizer.json with a vocabulary: {error}") from error
    if ids and max(ids) >= vocab_size:
        raise CheckpointError(
            f"{tokenizer_json} uses token id {max(ids)}, but the model has only {vocab_size} embeddings"
        )


# ---- whole runs -------------------------------------------------------------------------------


def export_run(run_dir: str | Path, out_dir: str | Path, dtype: str = "float32") -> tuple[str, str]:
    """`groklm export RUN --to hf DIR`: model, and tokenizer when the run has one.

    Returns the family ("gpt2" or "llama") and a note saying what happened to the tokenizer.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    family_of(GPTConfig.from_dict(read_config(run_dir)["model"]))  # refuse before loading weights
    model = merge_lora(load_model(run_dir))  # a LoRA run: its adapters folded into the weights
    tokenizer = load_tokenizer(run_dir / TOKENIZER_DIR) if (run_dir / TOKENIZER_DIR).is_dir() else None
    eot = tokenizer.eot_id if tokenizer is not None else None
    family = export_model(model, out_dir, bos_id=eot, eos_id=eot, dtype=dtype)
    if tokenizer is None:
        return family, f"the run has no {TOKENIZER_DIR}/, so no tokenizer was written"
    return family, write_hf_tokenizer(tokenizer, out_dir, model.config.block_size)
