"""`groklm sample` and `groklm attention`: use a trained model and look inside it.

    groklm sample RUN --prompt "Once upon a time" --max-new-tokens 200 --temperature 0.8 --seed 1
    groklm attention RUN --text "The cat sat on the mat. The cat" --out maps/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from groklm.errors import ConfigError


def register(subparsers) -> None:
    sample = subparsers.add_parser(
        "sample",
        help="generate text from a trained model, streamed as it is sampled",
        description="Continue a prompt with the model in RUN. The same --seed gives the same text.",
    )
    sample.add_argument("run", type=Path, metavar="RUN", help="run directory (config.json, model.safetensors, tokenizer/)")
    sample.add_argument("--prompt", default="", help="text to continue (empty: start a new document)")
    sample.add_argument("--max-new-tokens", type=int, default=200)
    sample.add_argument("--temperature", type=float, default=1.0, help="0 is greedy; <1 safer, >1 wilder")
    sample.add_argument("--top-k", type=int, default=None, help="sample only among the k likeliest tokens")
    sample.add_argument("--top-p", type=float, default=None, help="sample only within probability mass p")
    sample.add_argument("--seed", type=int, default=None, help="make the draw repeatable")
    sample.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (default)")
    sample.set_defaults(func=run_sample)

    attention = subparsers.add_parser(
        "attention",
        help="draw attention heat maps (one PNG per layer, one panel per head)",
        description="Run TEXT through the model in RUN and save each layer's attention weights as a PNG.",
    )
    attention.add_argument("run", type=Path, metavar="RUN", help="run directory")
    attention.add_argument("--text", required=True, help="the text to look at (short: a few dozen tokens)")
    attention.add_argument("--out", type=Path, default=None, help="output folder (default RUN/attention)")
    attention.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    attention.set_defaults(func=run_attention)

    merge = subparsers.add_parser(
        "merge",
        help="fold a LoRA run's adapters into its weights, giving a plain run",
        description="Write W + (alpha/r) B A for every adapter of the LoRA run RUN into a new run directory, "
                    "which loads, fine-tunes and exports without the base run or LoRA.",
    )
    merge.add_argument("run", type=Path, metavar="RUN", help="a LoRA run (groklm sft ... --set lora_rank=16)")
    merge.add_argument("--out", type=Path, required=True, help="the new run directory")
    merge.set_defaults(func=run_merge)


def pick_device(name: str) -> str:
    """--device: auto is the best this machine has; asking for CUDA without it is an error."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA GPU")
    return name


def run_sample(args: argparse.Namespace) -> None:
    import torch

    from groklm.infer.decode import decode, next_logits_of
    from groklm.runs import load

    if args.max_new_tokens < 0:
        raise ConfigError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    model, tokenizer = load(args.run, pick_device(args.device))
    # Special tokens typed in the prompt (e.g. "<|endoftext|>") are meant as such.
    ids = tokenizer.encode(args.prompt, allowed_special=set(tokenizer.special_tokens))
    if not ids:  # an empty prompt: start where every training document starts
        ids = [tokenizer.eot_id]
    beyond = sorted({i for i in ids if i >= model.config.vocab_size})
    if beyond:  # e.g. chat tokens an imported tokenizer gained that the model has no row for
        names = [tokenizer.decode([i]) for i in beyond]
        raise ConfigError(f"the prompt uses tokens {names} that this model has no embedding for")
    device = next(model.parameters()).device
    steps = decode(
        next_logits_of(model),
        torch.tensor([ids], device=device),
        args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )
    write(args.prompt)
    # The stream decoder holds back bytes until they complete a UTF-8 character, so a
    # character split over two tokens is never printed as garbage.
    decoder = tokenizer.stream_decoder()
    for step in steps:
        token = step.token.item()
        if token == tokenizer.eot_id:
            break  # the model ended the document
        if token < tokenizer.vocab_size:  # ids past the tokenizer (a padded vocab) mean nothing
            write(decoder.push(token))
    write(decoder.flush() + "\n")


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run_attention(args: argparse.Namespace) -> None:
    from groklm.model.heatmap import save_attention_maps
    from groklm.runs import load

    model, tokenizer = load(args.run, pick_device(args.device))
    if not hasattr(model, "attention_weights"):
        raise ConfigError(f"{args.run} holds a recurrent model: it has no attention to draw (a GPT run has)")
    n_tokens = len(tokenizer.encode(args.text))
    if n_tokens > model.config.block_size:
        print(f"groklm: the text is {n_tokens} tokens; drawing the first {model.config.block_size}", file=sys.stderr)
    out = args.out if args.out is not None else args.run / "attention"
    paths = save_attention_maps(model, tokenizer, args.text, out)
    print(f"wrote {len(paths)} heat maps ({model.config.n_head} heads each) to {out}")


def run_merge(args: argparse.Namespace) -> None:
    from groklm.runs import merge_run

    out = merge_run(args.run, args.out)
    print(f"merged the adapters of {args.run} into {out}", file=sys.stderr)
