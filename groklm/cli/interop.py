"""`groklm export` and `groklm import`: trade models with the Hugging Face ecosystem.

    groklm export RUN --to hf DIR        # then: AutoModelForCausalLM.from_pretrained(DIR)
    groklm import HF_DIR --out RUN       # a local GPT-2 / Llama-family checkpoint -> a run
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
        help="turn a local Hugging Face GPT-2 or Llama-family checkpoint into a run",
        description=(
            "Read HF_DIR (config.json, model.safetensors or sharded safetensors with their index, "
            "tokenizer.json) and write a groklm run directory every groklm command can use."
        ),
    )
    imp.add_argument("hf_dir", type=Path, metavar="HF_DIR", help="local checkpoint folder (nothing is downloaded)")
    imp.add_argument("--out", type=Path, required=True, metavar="RUN", help="run directory to create")
    imp.add_argument("--block-size", type=int, default=None,
                     help="context length to keep (default: the checkpoint's maximum positions)")
    imp.add_argument("--force", action="store_true", help="overwrite an existing run directory")
    imp.set_defaults(func=run_import)


def run_export(args: argparse.Namespace) -> None:
    from groklm.interop.hf import export_run

    family, tokenizer_note = export_run(args.run, args.out, dtype=args.dtype)
    architecture = "GPT2LMHeadModel" if family == "gpt2" else "LlamaForCausalLM"
    print(f"wrote {args.out} ({architecture}); {tokenizer_note}")
    print(f"load it with: AutoModelForCausalLM.from_pretrained({str(args.out)!r})")


def run_import(args: argparse.Namespace) -> None:
    from groklm.interop.hf import import_run

    model, tokenizer = import_run(args.hf_dir, args.out, block_size=args.block_size, force=args.force)
    c = model.config
    print(
        f"imported {args.hf_dir} -> {args.out}: {model.num_params() / 1e6:.2f}M parameters, "
        f"{c.n_layer} layers, {c.n_head} heads ({c.n_kv_head} kv), context {c.block_size}"
    )
    outside = [name for name, i in tokenizer.special_tokens.items() if i >= c.vocab_size]
    if outside:
        print(f"note: special tokens {outside} were added to the tokenizer but have no embedding row yet")
