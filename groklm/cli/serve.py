"""`groklm serve RUN`: an OpenAI-compatible server (and a chat page) for a run directory.

    groklm serve runs/chat                          # http://127.0.0.1:8000, page at /
    groklm serve runs/chat --api-key secret         # /v1/ routes need "Authorization: Bearer secret"
    GROKLM_API_KEY=secret groklm serve runs/chat    # the same, without the key in `ps` output
    groklm serve runs/chat --embedder default       # also /v1/embeddings (all-MiniLM-L6-v2)
    groklm serve runs/chat --no-traces              # record nothing (no /v1/feedback either)

Every chat completion is recorded, with its feedback, in the trace store the apps use
($GROKLM_TRACES, default ~/.groklm/traces.sqlite; --traces PATH for another), so that
`groklm traces` shows it and `groklm traces export` turns it into training data.

It binds to loopback unless --host says otherwise; on any other address, set a key.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from groklm.errors import ConfigError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a run over an OpenAI-compatible HTTP API, with a chat page at /",
        description="Serve RUN: /v1/chat/completions, /v1/completions, /v1/models, /health, and a chat "
        "page at /. Requests are batched continuously: up to --max-batch generate together, up to "
        "--max-waiting more queue, and the rest get 429.",
    )
    parser.add_argument("run", metavar="RUN", help="run directory (an SFT or RL model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--api-key", default=os.environ.get("GROKLM_API_KEY"), metavar="KEY",
                        help="require 'Authorization: Bearer KEY' on /v1/ routes (default: $GROKLM_API_KEY)")
    parser.add_argument("--max-batch", type=int, default=32, help="requests generated together (default 32)")
    parser.add_argument("--max-waiting", type=int, default=64, help="requests queued beyond the batch (default 64)")
    parser.add_argument("--kv-cache-mb", type=float, default=512, metavar="MB",  # groklm.infer.engine.DEFAULT_CACHE_MB
                        help="memory for the KV cache, in MiB (default 512): requests beyond it wait; one that cannot "
                        "fit alone is refused")
    parser.add_argument("--no-prefix-cache", dest="prefix_cache", action="store_false",
                        help="do not reuse the computed positions of prompts that start alike (a shared system prompt)")
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (default 1 MiB)")
    parser.add_argument("--model-name", default=None, help="the model id clients send (default: RUN's folder name)")
    parser.add_argument("--embedder", default=None, metavar="SPEC",
                        help="also answer /v1/embeddings with this embedder: default (all-MiniLM-L6-v2) or hf:DIR")
    traces = parser.add_mutually_exclusive_group()
    traces.add_argument("--traces", metavar="PATH", default=None,
                        help="record every chat completion and its feedback in this SQLite file (default: "
                        "$GROKLM_TRACES, else ~/.groklm/traces.sqlite, where `groklm traces` looks)")
    traces.add_argument("--no-traces", action="store_true",
                        help="record nothing; POST /v1/feedback then answers 404")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--quantize", default=None, metavar="KIND",
                        help="weight-only int8 or int4 for faster decoding on a CPU (default: the run's own weights)")
    grammar = parser.add_argument_group(
        "grammar limits", "what one response_format schema or forced tool call may cost; a request over a limit gets a "
        "400 naming it (defaults: groklm.infer.constrain.GrammarLimits)")
    grammar.add_argument("--grammar-max-chars", type=int, default=500_000, metavar="N",
                         help="largest regex a schema may compile to, in characters (default 500000)")
    grammar.add_argument("--grammar-compile-fuel", type=int, default=500_000, metavar="N",
                         help="lexer work allowed to compile one grammar (default 500000, about a second at worst)")
    grammar.add_argument("--grammar-step-fuel", type=int, default=500_000, metavar="N",
                         help="lexer work allowed for one token's mask (default 500000)")
    grammar.add_argument("--grammar-max-states", type=int, default=100_000, metavar="N",
                         help="automaton states one reply may build, ~1 kB each (default 100000)")
    grammar.add_argument("--grammar-cache-mb", type=float, default=256, metavar="MB",
                         help="memory for compiled grammars kept for reuse, least recently used evicted (default 256)")
    parser.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from groklm.apps.rag.embed import Embedder, load_embedder
    from groklm.apps.tracing import Tracer, default_path
    from groklm.infer.constrain import GrammarLimits, configure
    from groklm.infer.engine import AsyncEngine, Engine
    from groklm.rundir import TOKENIZER_DIR
    from groklm.serve.api import create_app
    from groklm.tokenizer.chat import check_chat_embeddings, check_chat_template

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {args.port}")
    if args.max_waiting < 0 or args.max_body_bytes < 1:
        raise ConfigError("--max-waiting must be >= 0 and --max-body-bytes >= 1")
    configure(GrammarLimits(max_regex_chars=args.grammar_max_chars, compile_fuel=args.grammar_compile_fuel,
                            step_fuel=args.grammar_step_fuel, max_states=args.grammar_max_states,
                            cache_mb=args.grammar_cache_mb))
    name = args.model_name or Path(args.run).resolve().name
    embedder = None
    if args.embedder:
        embedder = load_embedder(args.embedder, device=args.device)
        if not isinstance(embedder, Embedder):
            raise ConfigError("--embedder must be a local model (default or hf:DIR), not another server")
    engine = Engine.from_run(args.run, device=args.device, max_batch=args.max_batch, cache_mb=args.kv_cache_mb,
                             prefix_cache=args.prefix_cache, quantize=args.quantize)
    check_chat_template(engine.tokenizer, str(Path(args.run) / TOKENIZER_DIR / "tokenizer.json"))
    check_chat_embeddings(engine.tokenizer, engine.model.config.vocab_size, args.run)  # else every chat request fails
    engine = AsyncEngine(engine, args.max_waiting)
    trace_path = None if args.no_traces else (args.traces or default_path())
    recorder = None if trace_path is None else Tracer(trace_path)
    app = create_app(engine, name, api_key=args.api_key, max_body_bytes=args.max_body_bytes, embedder=embedder,
                     recorder=recorder)
    if recorder is not None:
        print(f"recording completions and feedback in {recorder.path} (--no-traces: record nothing)", file=sys.stderr)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"warning: serving on {args.host} with no --api-key: anyone who can reach it can use it", file=sys.stderr)
    print(f"serving {args.run} as model {name!r} at http://{args.host}:{args.port}/ (chat page at /)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
