"""`groklm chat RUN`: talk to a run in the terminal (the loop is groklm/infer/chat.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Iterator, TextIO

from groklm.errors import ConfigError

# groklm.infer.chat.HELP, which the loop prints (not imported: it loads the engine and torch);
# tests/test_cli_light.py checks that they agree.
CHAT_HELP = "commands: /reset, /system TEXT, /quit"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "chat",
        help="talk to a run in the terminal (streamed replies, history, /reset /system /quit)",
        description="Chat with RUN. Each input line is a user message; replies stream as they are "
        f"sampled. {CHAT_HELP}. Reads stdin, so a conversation can be piped in.",
    )
    parser.add_argument("run", metavar="RUN", help="run directory (an SFT or RL model)")
    parser.add_argument("--system", metavar="TEXT", help="system message")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="longest reply (default 256)")
    parser.add_argument("--seed", type=int, default=None, help="make the replies repeatable")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--quantize", default=None, metavar="KIND",
                        help="weight-only int8 or int4 for faster decoding on a CPU (default: the run's own weights)")
    parser.add_argument("--kv-cache-mb", type=float, default=512, metavar="MB",  # groklm.infer.engine.DEFAULT_CACHE_MB
                        help="memory for the KV cache, in MiB (default 512)")
    parser.add_argument("--no-prefix-cache", dest="prefix_cache", action="store_false",
                        help="compute the whole conversation again every turn instead of reusing the earlier turns")
    parser.set_defaults(func=run_chat)


def run_chat(args: argparse.Namespace) -> None:
    from groklm.infer.chat import HELP, chat_loop
    from groklm.model.quantize import quantize_weights
    from groklm.rundir import TOKENIZER_DIR
    from groklm.runs import load
    from groklm.tokenizer.chat import check_chat_embeddings, check_chat_template

    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    model, tokenizer = load(args.run, device=args.device)
    check_chat_template(tokenizer, f"{args.run}/{TOKENIZER_DIR}/tokenizer.json")
    check_chat_embeddings(tokenizer, model.config.vocab_size, args.run)
    if args.quantize:
        quantize_weights(model, args.quantize)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chatting with {args.run} ({HELP})", file=sys.stderr)
    chat_loop(model, tokenizer, read_lines(sys.stdin, "> " if interactive else None, sys.stdout),
              system=args.system, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
              max_new_tokens=args.max_new_tokens, seed=args.seed, cache_mb=args.kv_cache_mb, prefix_cache=args.prefix_cache)


def read_lines(stream: TextIO, prompt: str | None, out: TextIO) -> Iterator[str]:
    """Lines of `stream`; with a prompt (a terminal), show it before each read."""
    while True:
        if prompt:
            out.write(prompt)
            out.flush()
        line = stream.readline()
        if not line:
            return
        yield line
