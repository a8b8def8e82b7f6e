"""GGUF files (llama.cpp, ollama, LM Studio) read into our GPT and tokenizer.

GGUF is the one-file format most people hold a small model in: a header of typed metadata
(architecture, shapes, the whole tokenizer, the chat template) followed by the tensors, most of
them quantized in blocks of 32 or 256 values. The `gguf` package (llama.cpp's own reader)
parses the file and dequantizes; this module turns what it reads into the same two things an
HF checkpoint becomes (hf.py): a GPTConfig with a state dict in our names, and a tokenizer.

Four things are worth knowing about how llama.cpp writes a model:

  * Shapes are in ggml order, the reverse of PyTorch's; the reader already hands numpy arrays
    in PyTorch order, so an embedding is (vocab, n_embd) and a linear layer (out, in).
  * For the llama architecture the converter permutes the rows of q and k within each head,
    because llama.cpp's RoPE rotates adjacent pairs (x0, x1), (x2, x3)... while HF's (and ours)
    rotates the two halves of the head against each other. `unpermute_heads` undoes it;
    qwen2 is converted with the halves layout and is not permuted.
  * A missing output.weight means the LM head is the token embedding (tied).
  * The tokenizer lives in the metadata as plain lists (tokens, token types, merges, scores),
    which the tokenizer package turns into one of ours (`from_gguf_vocab`).

Every error a user can meet (not a GGUF, a cut-off download, an architecture or quantization
we cannot run, a missing key) is a GroklmError naming the file and what to do.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from tqdm import tqdm

from groklm.errors import CheckpointError, ConfigError
from groklm.model.config import GPTConfig
from groklm.model.gpt import GPT
from groklm.tokenizer import imports as tokenizer_imports

ARCHITECTURES = ("llama", "qwen2", "gpt2")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
Q = gguf.GGMLQuantizationType
# What we dequantize: plain floats, the classic block formats and the K-quants.
SUPPORTED_TYPES = (Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0,
                   Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K)
NO_ROPE_SCALING = (None, "none")
# A linear layer of one block: GGUF name -> ours (both families share the MLP/output names).
LLAMA_LINEARS = {"attn_output": "attn.proj", "ffn_gate": "mlp.gate", "ffn_up": "mlp.fc", "ffn_down": "mlp.proj"}
GPT2_LAYERS = {"attn_norm": "ln_1", "attn_qkv": "attn.qkv", "attn_output": "attn.proj",
               "ffn_norm": "ln_2", "ffn_up": "mlp.fc", "ffn_down": "mlp.proj"}


@dataclass
class GGUFFile:
    """A GGUF file, opened: its metadata as Python values and its tensors by name (not yet read)."""

    path: Path
    metadata: dict[str, Any]
    tensors: dict[str, Any]  # name -> gguf.ReaderTensor

    @property
    def architecture(self) -> str:
        return self.require("general.architecture")

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def require(self, key: str) -> Any:
        if key not in self.metadata:
            raise CheckpointError(f"{self.path} lacks the metadata key {key!r}; the file is incomplete "
                                  "(re-download it, or convert it again with a current llama.cpp)")
        return self.metadata[key]

    def quantization(self) -> dict[str, int]:
        """How many tensors of each type: {"Q4_1": 211, "F32": 61, ...}."""
        return dict(Counter(t.tensor_type.name for t in self.tensors.values()).most_common())


def open_gguf(path: str | Path) -> GGUFFile:
    """Parse a GGUF file's header (the tensors stay on disk, memory-mapped)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise CheckpointError(f"{path} is not a GGUF file (it does not start with 'GGUF'); "
                              "import reads .gguf files, Hugging Face model folders and hf:ORG/NAME")
    try:
        reader = gguf.GGUFReader(path)
        metadata = {key: field.contents() for key, field in reader.fields.items()}
    except (ValueError, IndexError, KeyError, OverflowError, UnicodeDecodeError, OSError, TypeError) as error:
        # A file cut short (an interrupted download) fails somewhere in the parser's reads.
        raise CheckpointError(f"{path} is truncated or corrupt ({type(error).__name__}: {error}); "
                              "download it again") from error
    return GGUFFile(path, metadata, {t.name: t for t in reader.tensors})


# ---- config -----------------------------------------------------------------------------------


def gguf_config(f: GGUFFile, block_size: int | None = None) -> GPTConfig:
    """The GPTConfig of the network a GGUF file holds, or a ConfigError for one we cannot run."""
    arch = f.architecture
    if arch not in ARCHITECTURES:
        raise ConfigError(f"{f.path} holds a {arch!r} model; groklm imports the GGUF architectures "
                          f"{', '.join(ARCHITECTURES)} (convert other models to one of these, or import a "
                          "Hugging Face folder)")

    def key(name: str) -> Any:
        return f.require(f"{arch}.{name}")

    def count(name: str, default: Any = None) -> int:
        value = f.get(f"{arch}.{name}", default) if default is not None else key(name)
        if isinstance(value, list):  # per-layer values: fine as long as every layer agrees
            if len(set(value)) != 1:
                raise ConfigError(f"{f.path}: {arch}.{name} differs between layers ({value}); not supported")
            value = value[0]
        return int(value)

    if "token_embd.weight" not in f.tensors:
        raise CheckpointError(f"{f.path} has no tensor 'token_embd.weight'; the file is incomplete")
    vocab_size = int(f.tensors["token_embd.weight"].shape[-1])  # ggml order: (n_embd, vocab)
    n_embd, n_head = count("embedding_length"), count("attention.head_count")
    context = count("context_length")
    if arch == "gpt2":
        if block_size and block_size > context:  # a learned position table cannot grow
            raise ConfigError(f"--block-size {block_size} is longer than the model's {context} positions")
        return GPTConfig(
            vocab_size=vocab_size,
            block_size=block_size or context, n_layer=count("block_count"), n_head=n_head, n_embd=n_embd,
            bias=True, pos="learned", norm="layernorm", mlp="gelu", tie_embeddings="output.weight" not in f.tensors,
            mlp_hidden=count("feed_forward_length"), norm_eps=float(key("attention.layer_norm_epsilon")),
        )
    head_dim = n_embd // n_head
    for name in ("rope.dimension_count", "attention.key_length", "attention.value_length"):
        if f"{arch}.{name}" in f.metadata and count(name) != head_dim:
            raise ConfigError(f"{f.path}: {arch}.{name}={count(name)} differs from embedding_length/head_count="
                              f"{head_dim}; partial RoPE and odd head sizes are not supported")
    scaling = f.get(f"{arch}.rope.scaling.type")
    if scaling not in NO_ROPE_SCALING or "rope_freqs.weight" in f.tensors:
        kind = scaling if scaling not in NO_ROPE_SCALING else "llama3 (rope_freqs)"
        raise ConfigError(f"{f.path} uses {kind} RoPE scaling, which groklm does not implement "
                          "(only plain RoPE); choose a model without it")
    if count("expert_count", 0):
        raise ConfigError(f"{f.path} is a mixture-of-experts model; groklm imports dense llama models only")
    return GPTConfig(
        vocab_size=vocab_size,
        block_size=block_size or context,
        n_layer=count("block_count"),
        n_head=n_head,
        n_kv_head=count("attention.head_count_kv", n_head),
        n_embd=n_embd,
        # Qwen2 has q/k/v biases; our one switch turns on the others too, as zeros (hf.py does the same).
        bias="blk.0.attn_q.bias" in f.tensors,
        pos="rope", norm="rmsnorm", mlp="swiglu",
        tie_embeddings="output.weight" not in f.tensors,
        mlp_hidden=count("feed_forward_length"),
        rope_theta=float(f.get(f"{arch}.rope.freq_base", 10000.0)),
        norm_eps=float(key("attention.layer_norm_rms_epsilon")),
    )


# ---- tensors ----------------------------------------------------------------------------------


def check_types(f: GGUFFile) -> None:
    """Refuse a quantization we cannot dequantize before any slow work starts."""
    bad = sorted({t.tensor_type.name for t in f.tensors.values() if t.tensor_type not in SUPPORTED_TYPES})
    if bad:
        names = ", ".join(t.name for t in SUPPORTED_TYPES)
        raise CheckpointError(f"{f.path} has tensors quantized as {', '.join(bad)}, which groklm cannot dequantize; "
                              f"supported: {names}. Use another quantization of the model (Q8_0, Q4_K_M, ...)")


def dequantize(f: GGUFFile, name: str) -> torch.Tensor:
    """One tensor as float32, in PyTorch's shape order."""
    if name not in f.tensors:
        raise CheckpointError(f"{f.path} has no tensor {name!r}; the file is incomplete or not a standard "
                              f"{f.architecture} conversion")
    tensor = f.tensors[name]
    try:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    except (NotImplementedError, ValueError) as error:
        raise CheckpointError(f"{f.path}: cannot dequantize {name} ({tensor.tensor_type.name}): {error}") from error
    shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))  # ggml order -> PyTorch order
    return torch.from_numpy(np.array(values, dtype=np.float32).reshape(shape))  # a copy: the file stays read-only


def unpermute_heads(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation (weight or bias rows of `n_head` heads).

    llama.cpp's converter takes each head's rows [first half | second half] and interleaves
    them (h0, s0, h1, s1, ...) so that its RoPE can rotate adjacent pairs; here they go back."""
    rows = weight.shape[0]
    heads = weight.reshape(n_head, rows // n_head // 2, 2, *weight.shape[1:])
    return heads.transpose(1, 2).reshape(weight.shape)


def gguf_state_dict(f: GGUFFile, config: GPTConfig, progress: bool = False) -> dict[str, torch.Tensor]:
    """Every tensor of the file, dequantized to float32, under our names (hf.py's layout)."""
    check_types(f)
    bar = tqdm(total=len(f.tensors), desc=f"dequantizing {f.path.name}", unit="tensor", disable=not progress)

    def take(name: str) -> torch.Tensor:
        bar.update(1)
        return dequantize(f, name)

    def maybe(name: str, rows: int) -> torch.Tensor:  # a bias the file may lack: zero is the same function
        return take(name) if name in f.tensors else torch.zeros(rows)

    c = config
    ours = {"wte.weight": take("token_embd.weight"), "ln_f.weight": take("output_norm.weight")}
    for i in range(c.n_layer):
        src, dst = f"blk.{i}", f"blocks.{i}"
        if f.architecture == "gpt2":
            for gguf_name, our_name in GPT2_LAYERS.items():
                ours[f"{dst}.{our_name}.weight"] = take(f"{src}.{gguf_name}.weight")
                ours[f"{dst}.{our_name}.bias"] = take(f"{src}.{gguf_name}.bias")
            continue
        ours[f"{dst}.ln_1.weight"] = take(f"{src}.attn_norm.weight")
        ours[f"{dst}.ln_2.weight"] = take(f"{src}.ffn_norm.weight")
        q, k, v = (take(f"{src}.attn_{p}.weight") for p in "qkv")
        parts = {"weight": [q, k, v]}
        if c.bias:
            parts["bias"] = [maybe(f"{src}.attn_{p}.bias", w.size(0)) for p, w in zip("qkv", (q, k, v))]
        for kind, (q, k, v) in parts.items():
            if f.architecture == "llama":
                q, k = unpermute_heads(q, c.n_head), unpermute_heads(k, c.n_kv_head)
            ours[f"{dst}.attn.qkv.{kind}"] = torch.cat([q, k, v], dim=0)
        for gguf_name, our_name in LLAMA_LINEARS.items():
            weight = ours[f"{dst}.{our_name}.weight"] = take(f"{src}.{gguf_name}.weight")
            if c.bias:
                ours[f"{dst}.{our_name}.bias"] = maybe(f"{src}.{gguf_name}.bias", weight.size(0))
    if f.architecture == "gpt2":
        ours["wpe.weight"] = take("position_embd.weight")[: c.block_size]
        ours["ln_f.bias"] = take("output_norm.bias")
    ours["lm_head.weight"] = ours["wte.weight"] if c.tie_embeddings else take("output.weight")
    bar.close()
    return ours


# ---- tokenizer --------------------------------------------------------------------------------


def gguf_tokenizer(f: GGUFFile, chat_template: str | None = None):
    """The tokenizer in the file's metadata, with its ids, special tokens and chat template.

    `chat_template` replaces the file's own template (tokenizer.chat_template)."""
    def token_id(name: str) -> int | None:
        value = f.get(f"tokenizer.ggml.{name}")
        return int(value) if value is not None else None

    eot_ids = [i for i in (token_id("eot_token_id"), token_id("eom_token_id")) if i is not None]
    add_space_prefix = f.get("tokenizer.ggml.add_space_prefix")
    tokenizer = tokenizer_imports.from_gguf_vocab(
        model=f.require("tokenizer.ggml.model"),
        tokens=list(f.require("tokenizer.ggml.tokens")),
        token_types=[int(t) for t in f.require("tokenizer.ggml.token_type")],
        merges=f.get("tokenizer.ggml.merges"),
        scores=f.get("tokenizer.ggml.scores"),
        pre=f.get("tokenizer.ggml.pre"),
        bos_id=token_id("bos_token_id"),
        eos_id=token_id("eos_token_id"),
        unk_id=token_id("unknown_token_id"),
        eot_ids=eot_ids,
        add_space_prefix=bool(add_space_prefix) if add_space_prefix is not None else None,
        source=str(f.path),
    )
    template = chat_template if chat_template is not None else f.get("tokenizer.chat_template")
    if template is not None:
        tokenizer = tokenizer.with_conventions(dataclasses.replace(tokenizer.conventions, chat_template=template))
    return tokenizer


# ---- the whole model --------------------------------------------------------------------------


def load_gguf(path: str | Path, *, dtype: str = "float32", block_size: int | None = None,
              chat_template: str | None = None, progress: bool = False):
    """A GGUF file -> (our GPT in eval mode, its tokenizer, a summary dict for the run's config).

    dtype: "float32" (default) or "bfloat16", the precision the dequantized weights are kept in."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    f = open_gguf(path)
    config = gguf_config(f, block_size)
    check_types(f)  # before the tokenizer and the weights: both take seconds on a real model
    tokenizer = gguf_tokenizer(f, chat_template)
    largest = max(tokenizer.special_tokens.values(), default=-1)
    if tokenizer.vocab_size > config.vocab_size or largest >= config.vocab_size:
        raise CheckpointError(f"{f.path}: the tokenizer has {max(tokenizer.vocab_size, largest + 1)} ids but the model "
                              f"only {config.vocab_size} embeddings; the file is inconsistent")
    state = gguf_state_dict(f, config, progress=progress)
    model = GPT(config).to(DTYPES[dtype])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{f.path} does not match its own metadata: {error}") from error
    summary = {"format": "gguf", "path": str(f.path.resolve()), "architecture": f.architecture,
               "name": f.get("general.name"), "quantization": f.quantization()}
    return model.eval(), tokenizer, summary
