"""A run written as one GGUF file, the format llama.cpp, ollama and LM Studio load.

    groklm export RUN --to gguf model.gguf --type q8_0

The file is what llama.cpp's own converter (convert_hf_to_gguf.py) would write for the same
network, written with the `gguf` package: typed metadata (the architecture and its shapes, the
whole tokenizer, the chat template), then the tensors. gguf.py reads such files back; this
module is its inverse, and the reader's notes hold here in reverse:

  * A Llama-shaped run becomes the `llama` architecture, with the rows of q and k permuted
    within each head (`permute_heads`, undone by gguf.py's `unpermute_heads`), because
    llama.cpp's RoPE rotates adjacent pairs where ours rotates the two halves of a head. A
    Llama-shaped run with biases only on q, k and v (an imported Qwen2) becomes `qwen2`,
    which keeps our halves layout and is not permuted.
  * A GPT-2-shaped run becomes `gpt2`: fused qkv, learned positions, LayerNorm with biases
    (zeros for a run without them), shared key/value heads copied out to every query head.
  * A tied LM head is written once, as the token embedding: no output.weight.
  * The tensor types follow the converter: norms and biases stay F32; matrices are F32, F16
    or Q8_0 (blocks of 32 values with one scale) as asked. A matrix whose rows are not a
    multiple of 32 values cannot be Q8_0 and falls back to F16, as in llama.cpp.
  * A byte-level BPE tokenizer is written as llama.cpp's `gpt2` vocabulary (each token spelled
    in GPT-2's byte alphabet, the merges "a b", token types, the pre-tokenizer's name), the form
    SmolLM2, Llama 3 and Qwen2 ship in. A SentencePiece-style one (MetaspaceTokenizer: Llama 2,
    Mistral, TinyLlama) becomes the `llama` vocabulary: tokens spelled with "▁" and <0xXX>,
    scores that make llama.cpp's merge order ours (it joins the pair whose token scores
    highest), token types, the merges for transformers, and add_space_prefix. llama.cpp puts
    the "▁" before a text and after each special token, transformers and groklm's import at the
    start of a text only: a prefix scheme one of them reads exactly is written, with a note on
    where the others differ, and one that none reads (Metaspace's "always"), a tokenizer without
    all 256 byte tokens, or one that cuts words where llama.cpp would merge across is refused.
    Character and WordPiece tokenizers are refused.
    The model's embedding rows past the tokenizer's vocabulary get unused filler tokens.

The file is written to a temporary path beside OUT and renamed at the end: an error or a
crash leaves no half-written .gguf behind. What GGUF cannot hold (a recurrent model, a
mixture of experts, a shape neither llama.cpp family has) is refused before anything is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
import torch

from groklm.errors import CheckpointError, ConfigError, TokenizerError
from groklm.interop.hf import family_of, repeat_kv_heads, split_qkv
from groklm.model.config import GPTConfig
from groklm.rundir import TOKENIZER_DIR, atomic_path, read_config
from groklm.runs import load
from groklm.tokenizer import BaseTokenizer, CharTokenizer, MetaspaceTokenizer, Tokenizer
from groklm.tokenizer.base import IM_END
from groklm.tokenizer.bpe import GPT2_PATTERN, GPT4_PATTERN, SMOLLM_PATTERN
from groklm.tokenizer.chat import chat_format
from groklm.tokenizer.imports import LLAMA3_PATTERN, QWEN2_PATTERN, byte_alphabet
from groklm.tokenizer.metaspace import SPACE, byte_token

Q = gguf.GGMLQuantizationType
# --type -> (the type of every matrix, the file type llama.cpp reports)
TYPES = {
    "f32": (Q.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
    "q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
# Our pre-split regexes under the names llama.cpp (and gguf.py's reader) know them by.
PRE_NAMES = {GPT2_PATTERN: "gpt-2", SMOLLM_PATTERN: "smollm", LLAMA3_PATTERN: "llama-bpe", QWEN2_PATTERN: "qwen2"}
# llama.cpp's token types (tokenizer.ggml.token_type)
NORMAL, UNKNOWN, CONTROL, UNUSED, BYTE = (int(gguf.TokenType[name]) for name in ("NORMAL", "UNKNOWN", "CONTROL", "UNUSED", "BYTE"))
# Our Llama linears -> the GGUF names (the MLP names are the same for gpt2).
LLAMA_LINEARS = {"attn.proj": "attn_output", "mlp.gate": "ffn_gate", "mlp.fc": "ffn_up", "mlp.proj": "ffn_down"}
GPT2_LINEARS = {"attn.proj": "attn_output", "mlp.fc": "ffn_up", "mlp.proj": "ffn_down"}
# groklm's ChatML as a Jinja template, for a run without a template of its own, so that
# llama.cpp formats a conversation exactly as groklm does (tokenizer/chat.py): with the
# <|im_start|>/<|im_end|> special tokens, or spelled as text with replies ended by eos.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_TEXT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% else %}{{ '<|im_end|>' }}{% endif %}{{ '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass
class GGUFExport:
    """What `export_gguf` wrote, for the command to tell the user."""

    path: Path
    architecture: str  # "llama", "qwen2" or "gpt2"
    quant: str  # the --type asked for: f32, f16 or q8_0
    tensor_types: dict[str, int]  # e.g. {"Q8_0": 14, "F16": 2, "F32": 9}
    vocab_size: int
    notes: list[str] = field(default_factory=list)


# ---- what can be exported -----------------------------------------------------------------------


def gguf_architecture(saved: dict, run_dir: Path) -> tuple[GPTConfig, str]:
    """The GPTConfig of a run and the GGUF architecture that holds it, or a ConfigError
    saying why none does. Reads only config.json: nothing slow happens before this check."""
    arch = saved.get("arch", "gpt")
    if arch != "gpt":
        raise ConfigError(f"{run_dir} holds a {arch!r} model; GGUF (llama.cpp) runs decoder transformers only, so "
                          "only GPT runs of GPT-2 or Llama shape can be exported to it (export a recurrent model's "
                          "run nowhere: use it with groklm itself)")
    try:
        config = GPTConfig.from_dict(saved["model"])
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{run_dir}/config.json has no valid model section: {error}") from error
    family = family_of(config)  # a ConfigError naming the exportable shapes (and refusing MoE, MoD)
    if family == "gpt2":
        if config.mlp == "gelu_exact":
            raise ConfigError(f"{run_dir} uses the exact (erf) GELU, and llama.cpp's gpt2 computes the tanh form: "
                              "GGUF cannot hold it (export to Hugging Face with --to hf, which can)")
        return config, "gpt2"
    if config.head_dim % 2:
        raise ConfigError(f"{run_dir}: head size {config.head_dim} is odd; RoPE (and so GGUF's llama) needs an even one")
    return config, "qwen2" if config.bias else "llama"


def check_qwen2_biases(state: dict[str, torch.Tensor], config: GPTConfig) -> None:
    """Qwen2 (the only llama-family GGUF architecture with biases) has them on q, k, v alone."""
    for i in range(config.n_layer):
        for name in ("attn.proj", "mlp.gate", "mlp.fc", "mlp.proj"):
            bias = state[f"blocks.{i}.{name}.bias"]
            if bias.abs().max().item() != 0:
                raise ConfigError(
                    f"this Llama-shaped run has a non-zero bias on blocks.{i}.{name}; GGUF's llama-family "
                    "architectures hold biases on q, k and v only (qwen2), so it cannot be exported exactly. "
                    "Train with bias=false for a GGUF-exportable Llama shape")


# ---- tensors ------------------------------------------------------------------------------------


def permute_heads(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's q/k row order: each head's rows [first half | second half] interleaved
    (h0, s0, h1, s1, ...), so that its RoPE, which rotates adjacent pairs, computes ours."""
    rows = weight.shape[0]
    heads = weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
    return heads.transpose(1, 2).reshape(weight.shape)


def llama_gguf_tensors(state: dict[str, torch.Tensor], c: GPTConfig, arch: str) -> dict[str, torch.Tensor]:
    out = {"token_embd.weight": state["wte.weight"], "output_norm.weight": state["ln_f.weight"]}
    for i in range(c.n_layer):
        src, dst = f"blocks.{i}", f"blk.{i}"
        out[f"{dst}.attn_norm.weight"] = state[f"{src}.ln_1.weight"]
        for kind in ("weight", "bias") if c.bias else ("weight",):
            q, k, v = split_qkv(state[f"{src}.attn.qkv.{kind}"], c)
            if arch == "llama":
                q, k = permute_heads(q, c.n_head), permute_heads(k, c.n_kv_head)
            out[f"{dst}.attn_q.{kind}"], out[f"{dst}.attn_k.{kind}"], out[f"{dst}.attn_v.{kind}"] = q, k, v
        for ours, theirs in LLAMA_LINEARS.items():
            out[f"{dst}.{theirs}.weight"] = state[f"{src}.{ours}.weight"]
        out[f"{dst}.ffn_norm.weight"] = state[f"{src}.ln_2.weight"]
    if not c.tie_embeddings:
        out["output.weight"] = state["lm_head.weight"]
    return out


def gpt2_gguf_tensors(state: dict[str, torch.Tensor], c: GPTConfig) -> dict[str, torch.Tensor]:
    def bias(name: str, size: int) -> torch.Tensor:
        return state.get(name, torch.zeros(size))  # bias=False: GPT-2 always has one; zero is the same function

    out = {"token_embd.weight": state["wte.weight"], "position_embd.weight": state["wpe.weight"],
           "output_norm.weight": state["ln_f.weight"], "output_norm.bias": bias("ln_f.bias", c.n_embd)}
    for i in range(c.n_layer):
        src, dst = f"blocks.{i}", f"blk.{i}"
        for ours, theirs in (("ln_1", "attn_norm"), ("ln_2", "ffn_norm")):
            out[f"{dst}.{theirs}.weight"] = state[f"{src}.{ours}.weight"]
            out[f"{dst}.{theirs}.bias"] = bias(f"{src}.{ours}.bias", c.n_embd)
        parts = {"weight": state[f"{src}.attn.qkv.weight"],
                 "bias": bias(f"{src}.attn.qkv.bias", (c.n_head + 2 * c.n_kv_head) * c.head_dim)}
        for kind, tensor in parts.items():  # gpt2 has one kv head per query head: copy shared ones out
            q, k, v = split_qkv(tensor, c)
            if c.n_kv_head != c.n_head:
                k, v = repeat_kv_heads(k, c), repeat_kv_heads(v, c)
            out[f"{dst}.attn_qkv.{kind}"] = torch.cat([q, k, v], dim=0)
        for ours, theirs in GPT2_LINEARS.items():
            weight = state[f"{src}.{ours}.weight"]
            out[f"{dst}.{theirs}.weight"] = weight
            out[f"{dst}.{theirs}.bias"] = bias(f"{src}.{ours}.bias", weight.size(0))
    if not c.tie_embeddings:
        out["output.weight"] = state["lm_head.weight"]
    return out


def encode_tensor(tensor: torch.Tensor, qtype: Q) -> tuple[np.ndarray, Q]:
    """A tensor as the bytes of its GGUF type: 1-D ones (norms, biases) F32, matrices `qtype`,
    Q8_0 falling back to F16 where a row is not a whole number of 32-value blocks."""
    data = tensor.detach().to("cpu", torch.float32).contiguous().numpy()
    if data.ndim == 1 or qtype == Q.F32:
        return data, Q.F32
    if qtype == Q.Q8_0:
        if data.shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0] == 0:
            return gguf.quants.quantize(data, Q.Q8_0), Q.Q8_0
        qtype = Q.F16
    return data.astype(np.float16), Q.F16


# ---- the tokenizer ------------------------------------------------------------------------------


@dataclass
class GGUFVocab:
    """A tokenizer as llama.cpp's `tokenizer.ggml.*` keys."""

    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    tokens: list[str]
    types: list[int]
    merges: list[str] | None  # "left right"; None: the readers derive them from the scores
    scores: list[float] | None  # llama only: SentencePiece merges the highest-scoring pair first
    pre: str
    add_space_prefix: bool | None  # llama only
    bos_id: int | None
    eos_id: int
    eot_id: int | None
    unk_id: int | None
    chat_template: str
    notes: list[str]


def gguf_vocab(tokenizer: BaseTokenizer, vocab_size: int, source: str) -> GGUFVocab:
    """The tokenizer as a GGUF vocabulary of exactly `vocab_size` tokens (llama.cpp wants one
    token per embedding row): a byte-level BPE as `gpt2`, a SentencePiece-style one as `llama`;
    or a TokenizerError saying why it has none."""
    if isinstance(tokenizer, CharTokenizer):
        raise TokenizerError(
            f"{source}: a character tokenizer has no GGUF form: llama.cpp reads a byte-level vocabulary only "
            "together with its merges, and a character vocabulary has none. Export a run whose tokenizer is a "
            "BPE (groklm tokenizer train), or export to Hugging Face with --to hf")
    if isinstance(tokenizer, MetaspaceTokenizer):
        return sentencepiece_vocab(tokenizer, vocab_size, source)
    if not isinstance(tokenizer, Tokenizer):
        raise TokenizerError(f"{source}: a {type(tokenizer).__name__} has no GGUF form yet; groklm writes byte-level "
                             "BPE and SentencePiece-style (metaspace) tokenizers to GGUF (export to Hugging Face with "
                             "--to hf)")
    return byte_level_vocab(tokenizer, vocab_size, source)


def byte_level_vocab(tokenizer: Tokenizer, vocab_size: int, source: str) -> GGUFVocab:
    """llama.cpp's `gpt2` vocabulary: each token spelled in GPT-2's byte alphabet, the merges, the pre-split's name."""
    alphabet = byte_alphabet()
    notes = []
    pattern, merges = tokenizer.pattern, tokenizer.merges
    if not merges:
        raise TokenizerError(f"{source}: the tokenizer has no merges, and llama.cpp refuses a byte-level vocabulary "
                             "without them; train it with a larger vocabulary")
    if pattern == GPT4_PATTERN:
        # llama.cpp has no cl100k pre-tokenizer; llama-bpe (Llama 3's regex) is the same
        # splitting except for whitespace after a line break at the very end of a text.
        pre = "llama-bpe"
        notes.append("the tokenizer's cl100k (gpt4) pre-split is written as llama.cpp's llama-bpe, which splits "
                     "the same except for whitespace after a line break at the end of a text")
    elif pattern in PRE_NAMES:
        pre = PRE_NAMES[pattern]
    else:
        raise TokenizerError(f"{source}: the tokenizer splits text with a custom regex ({pattern!r}) that llama.cpp "
                             f"does not know; GGUF can name only its built-in pre-tokenizers "
                             f"(groklm writes {', '.join(sorted(['gpt4', *PRE_NAMES.values()]))})")
    check_vocab_fits(tokenizer, vocab_size, source)

    def spell(token_id: int) -> str:
        return "".join(alphabet[b] for b in tokenizer.token_bytes(token_id))

    specials = {i: name for name, i in tokenizer.special_tokens.items()}
    tokens, types = [], []
    for i in range(vocab_size):
        if i in specials:
            tokens.append(specials[i])
            types.append(CONTROL)
            continue
        try:
            tokens.append(spell(i))
            types.append(NORMAL)
        except TokenizerError:  # an id no token uses (past the vocabulary, or a hole in an import)
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
    notes += check_spellings(tokens, types, source)
    return GGUFVocab(
        model="gpt2", tokens=tokens, types=types,
        merges=[f"{spell(left)} {spell(right)}" for left, right, _ in merges],
        scores=None, pre=pre, add_space_prefix=None,
        **roles(tokenizer, tokenizer.unk_id, notes),
    )


def sentencepiece_vocab(tokenizer: MetaspaceTokenizer, vocab_size: int, source: str) -> GGUFVocab:
    """llama.cpp's `llama` vocabulary (Llama 2, Mistral, TinyLlama): the tokens as the tokenizer
    spells them ("▁" for a space, `<0xXX>` for a byte), scores and types as llama.cpp's converter
    writes them from a SentencePiece model, and whether a "▁" goes before the text."""
    notes = []
    # llama.cpp spells any character outside the vocabulary as its byte tokens, whatever the
    # tokenizer says, and stops with an error where one of the 256 is missing.
    missing = [byte_token(b) for b in range(256) if byte_token(b) not in tokenizer.vocab]
    if not tokenizer.byte_fallback or missing:
        lacks = f"lacks {len(missing)} of the byte tokens (e.g. {missing[0]})" if missing else "has byte fallback off"
        raise TokenizerError(f"{source}: the tokenizer {lacks}; llama.cpp's SentencePiece vocabulary spells every "
                             "character outside the vocabulary as its UTF-8 bytes <0x00>..<0xFF>, so GGUF cannot "
                             "hold it (export to Hugging Face with --to hf)")
    # llama.cpp never cuts a text into words: cutting before each "▁" changes nothing only
    # where no merge joins across one.
    crossing = [m for m in tokenizer.merges if SPACE in (m[0] + m[1])[1:]]
    if tokenizer.split and crossing:
        raise TokenizerError(f"{source}: the tokenizer cuts words before each '{SPACE}' but has merges across them "
                             f"(e.g. {crossing[0]!r}); llama.cpp merges over the whole text, so GGUF cannot hold "
                             "it (export to Hugging Face with --to hf)")
    # Where the "▁" before a text goes. llama.cpp (add_space_prefix) puts one before the text and
    # after every special token even when the text already begins with a space, which is the
    # "normalizer" scheme; transformers and groklm's import ignore the flag and put one at the
    # very start only, unless the text begins with a space ("first"). A scheme that one of them
    # reads exactly is written, with a note on where the others differ; "always" matches none.
    if tokenizer.prefix == "always":
        raise TokenizerError(f"{source}: the tokenizer puts '{SPACE}' before every text and after every special "
                             "token unless one is there already (Metaspace prepend_scheme 'always'); llama.cpp adds "
                             "one even then, and transformers only at the very start, so no GGUF reader would "
                             "tokenize as groklm does (export to Hugging Face with --to hf)")
    add_space_prefix = tokenizer.prefix != "never"
    if tokenizer.prefix == "normalizer":
        notes.append(f"the '{SPACE}' prefix is written as llama.cpp's add_space_prefix, which llama.cpp reads "
                     "exactly; transformers and groklm's GGUF import put it only at the very start of a text, so "
                     "they tokenize a text that begins with a space, or follows a special token, differently")
    elif tokenizer.prefix == "first":
        notes.append(f"the '{SPACE}' prefix at the start of a text is written as add_space_prefix: transformers and "
                     "groklm's GGUF import read it exactly, while llama.cpp also puts one after every special token "
                     "and before a text that already begins with a space")
    else:
        notes.append("no space prefix is written as add_space_prefix = false, which llama.cpp and groklm's GGUF "
                     f"import read exactly; transformers ignores it and puts a '{SPACE}' at the start of a text")
    check_vocab_fits(tokenizer, vocab_size, source)

    # Scores: llama.cpp merges the adjacent pair whose joined token scores highest, so each
    # token scores minus the rank of the first merge that makes it, and every token no merge
    # makes (single characters, fillers) scores below all of them. Byte, control and unknown
    # tokens score 0, as SentencePiece (and so llama.cpp's converter) gives them.
    made_at: dict[str, int] = {}
    for rank, (left, right) in enumerate(tokenizer.merges):
        made_at.setdefault(left + right, rank)
    below = -float(len(tokenizer.merges))
    unk = tokenizer.unk_token
    unk_id = None if unk is None else tokenizer.vocab.get(unk, tokenizer.special_tokens.get(unk))
    names = {i: text for text, i in tokenizer.vocab.items()}
    specials = {i: text for text, i in tokenizer.special_tokens.items()}
    bytes_ids = {tokenizer.vocab[byte_token(b)] for b in range(256)}
    tokens, types, scores = [], [], []
    for i in range(vocab_size):
        if i in specials:
            tokens.append(specials[i])
            types.append(UNKNOWN if i == unk_id else CONTROL)
            scores.append(0.0)
        elif i in names:
            tokens.append(names[i])
            types.append(BYTE if i in bytes_ids else UNKNOWN if i == unk_id else NORMAL)
            if types[-1] != NORMAL:
                scores.append(0.0)
            else:
                scores.append(-float(made_at[names[i]]) if names[i] in made_at else below)
        else:  # an id no token uses (past the vocabulary, or a hole in an import)
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            scores.append(below)
    notes += check_spellings(tokens, types, source)
    # The merges too, which transformers and groklm's import use as they are rather than derive
    # from the scores; "left right" cannot hold a token with a real space in it.
    merges = None if any(" " in left + right for left, right in tokenizer.merges) else [
        f"{left} {right}" for left, right in tokenizer.merges]
    return GGUFVocab(
        model="llama", tokens=tokens, types=types, merges=merges, scores=scores,
        pre="default",  # what llama.cpp's converter names a SentencePiece vocabulary's pre-tokenizer
        add_space_prefix=add_space_prefix,
        **roles(tokenizer, unk_id, notes),
    )


def check_vocab_fits(tokenizer: BaseTokenizer, vocab_size: int, source: str) -> None:
    largest = max([tokenizer.vocab_size - 1, *tokenizer.special_tokens.values()])
    if largest >= vocab_size:
        raise CheckpointError(f"{source}: the tokenizer has ids up to {largest} but the model only {vocab_size} "
                              "embeddings; the run's model and tokenizer do not belong together")


def check_spellings(tokens: list[str], types: list[int], source: str) -> list[str]:
    """A GGUF vocabulary looks tokens up by spelling: refuse two ids spelled alike, and note the fillers."""
    seen: dict[str, int] = {}
    for i, token in enumerate(tokens):
        if types[i] != UNUSED and seen.setdefault(token, i) != i:
            raise TokenizerError(f"{source}: ids {seen[token]} and {i} are both spelled {token!r}; a GGUF vocabulary "
                                 "looks tokens up by spelling and cannot hold both")
    fillers = types.count(UNUSED)
    return [f"{fillers} embedding rows have no token and are written as unused [PAD] tokens"] if fillers else []


def roles(tokenizer: BaseTokenizer, unk_id: int | None, notes: list[str]) -> dict:
    """The GGUFVocab fields that name tokens by role, the chat template, and the notes."""
    c = tokenizer.conventions
    ids = tokenizer.special_tokens
    # What ends a reply besides eos (tokenizer/chat.py's stop_ids): the conventions' stop
    # tokens, or <|im_end|> where the format writes it; llama.cpp stops on its eot token.
    stops = [ids[name] for name in c.stop_tokens]
    writes_im_end = chat_format(tokenizer) == "chatml" or IM_END in (c.chat_template or "")
    if not stops and writes_im_end and IM_END in ids and c.eos_token != IM_END:
        stops = [ids[IM_END]]
    template = c.chat_template
    if template is None:
        template = CHATML_TEMPLATE if chat_format(tokenizer) == "chatml" else CHATML_TEXT_TEMPLATE
        notes = [*notes, "the run has no chat template of its own: groklm's ChatML is written as one"]
    return dict(
        bos_id=ids[c.bos_token] if c.bos_token is not None else None,
        eos_id=ids[c.eos_token],
        eot_id=stops[0] if stops else None,
        unk_id=unk_id,
        chat_template=template,
        notes=notes,
    )


# ---- writing ------------------------------------------------------------------------------------


def write_metadata(writer: gguf.GGUFWriter, c: GPTConfig, arch: str, name: str, file_type: int) -> None:
    writer.add_name(name)
    writer.add_file_type(int(file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(c.block_size)
    writer.add_embedding_length(c.n_embd)
    writer.add_block_count(c.n_layer)
    writer.add_feed_forward_length(c.mlp_hidden)
    writer.add_head_count(c.n_head)
    if arch == "gpt2":
        writer.add_head_count_kv(c.n_head)  # shared kv heads are written out as copies
        writer.add_layer_norm_eps(c.norm_eps)
        return
    writer.add_head_count_kv(c.n_kv_head)
    writer.add_layer_norm_rms_eps(c.norm_eps)
    writer.add_rope_freq_base(c.rope_theta)
    writer.add_rope_dimension_count(c.head_dim)
    writer.add_vocab_size(c.vocab_size)


def write_vocab(writer: gguf.GGUFWriter, vocab: GGUFVocab) -> None:
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if vocab.merges is not None:
        writer.add_token_merges(vocab.merges)
    if vocab.add_space_prefix is not None:
        writer.add_add_space_prefix(vocab.add_space_prefix)
    writer.add_eos_token_id(vocab.eos_id)
    if vocab.bos_id is not None:
        writer.add_bos_token_id(vocab.bos_id)
    if vocab.eot_id is not None:
        writer.add_eot_token_id(vocab.eot_id)
    if vocab.unk_id is not None:
        writer.add_unk_token_id(vocab.unk_id)
    # groklm's encode adds nothing around a text; a template that wants a bos writes it itself.
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template(vocab.chat_template)


def export_gguf(run_dir: str | Path, out: str | Path, quant: str = "f32", name: str | None = None) -> GGUFExport:
    """`groklm export RUN --to gguf OUT.gguf --type f32|f16|q8_0`: write the run as one GGUF file.

    Refuses (ConfigError, TokenizerError) before reading any weights what GGUF cannot hold, and
    writes through a temporary file, so OUT is either the whole export or untouched."""
    run_dir, out = Path(run_dir), Path(out)
    if quant not in TYPES:
        raise ConfigError(f"--type must be one of {', '.join(TYPES)}, got {quant!r}")
    if out.is_dir():
        raise ConfigError(f"{out} is a directory; --to gguf writes one file: give a path such as {out / 'model.gguf'}")
    if out.suffix != ".gguf":
        raise ConfigError(f"{out}: name the GGUF file with a .gguf suffix (llama.cpp and ollama look for it)")
    if not (run_dir / TOKENIZER_DIR).is_dir():
        raise CheckpointError(f"{run_dir} has no {TOKENIZER_DIR}/; a GGUF file carries its tokenizer, so the run needs one")
    config, arch = gguf_architecture(read_config(run_dir), run_dir)
    model, tokenizer = load(run_dir)
    vocab = gguf_vocab(tokenizer, config.vocab_size, str(run_dir / TOKENIZER_DIR))
    state = model.state_dict()
    if arch == "qwen2":
        check_qwen2_biases(state, config)
    tensors = gpt2_gguf_tensors(state, config) if arch == "gpt2" else llama_gguf_tensors(state, config, arch)
    qtype, file_type = TYPES[quant]
    counts: dict[str, int] = {}
    with atomic_path(out) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch)
        write_metadata(writer, config, arch, name or run_dir.resolve().name, file_type)
        write_vocab(writer, vocab)
        for tensor_name, tensor in tensors.items():
            data, written = encode_tensor(tensor, qtype)
            writer.add_tensor(tensor_name, data, raw_dtype=written if written == Q.Q8_0 else None)
            counts[written.name] = counts.get(written.name, 0) + 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        # The temporary file is private (0600); the export is for other programs (ollama runs
        # as its own user), so it gets a new file's usual permissions before the rename.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)
    notes = list(vocab.notes)
    if quant == "q8_0" and counts.get("F16"):
        notes.append(f"{counts['F16']} matrices have rows that are not a multiple of 32 values and are F16 instead of Q8_0")
    return GGUFExport(out, arch, quant, dict(sorted(counts.items())), len(vocab.tokens), notes)
