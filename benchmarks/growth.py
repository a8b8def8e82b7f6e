"""Growth: how groklm's costs grow with the work, one section (and one PNG plot) per kind of work.

  context  a training step of train_throughput.py's GPT (4 layers x 256 wide, vocab 8192) at
           context 64 to 2048, with the tokens per step held constant (--tokens-per-step, so
           the batch shrinks as the context grows and the points compare): tokens/s (of the
           fastest of --steps timed steps: the one least disturbed by other work on a shared
           machine) and peak memory. Each point runs in a fresh process, so its high-water
           mark of resident memory (VmHWM) is its own; `step_mb` is that peak less the
           resident memory just before the first step (the model, its weights and the data:
           what the step itself adds). groklm trains as its loop does (dtype=auto; the fused
           AdamW), and groklm/model/attention.py picks the attention path per length: written
           out (softmax(QK^T)V) for short bf16 sequences on a CPU, else PyTorch's fused
           scaled_dot_product_attention, whose kernel (as torch.profiler names it) is reported.
           The peer is the path groklm does not pick, forced, at every length.
  kvcache  bytes per cached position of the engine's paged KV cache for the speedrun's model
           (the `tiny` preset), SmolLM2-135M (grouped-query attention: 3 kv heads for 9 query
           heads; its config read from the packaged GGUF) and GPT-2 124M (the `gpt2-124m`
           preset), as groklm.model.kv_cache.bytes_per_token computes them from the config,
           checked against what an Engine built on each model (random weights) allocates:
           the cache's tensors' bytes over the positions its pool holds, in float32 and bf16.
           The peer: SmolLM2 as if every query head had its own keys and values.
  serve    `groklm serve` on the speedrun's shape (benchmarks/serve.py's run, servers and load):
           aggregate completion tokens/s and p50/p99 request latency at 1 to 64 concurrent
           clients, with continuous batching (--max-batch 64) against one request at a time
           (--max-batch 1), the peer.
  rag      benchmarks/retrieve.py's measurement at 1k, 10k and 100k synthetic 384-d vectors
           (1M with --rag-1m: 5 more minutes of IVF build on a quiet core, over 15 on a busy
           one): the store's build, the approximate index's build (groklm/apps/rag/vectors.py
           scans one cell whole below 10k vectors and builds IVF with 8-bit codes from 10k
           on), single-query p50/p99 on one core of groklm's exact search, FAISS's exact
           IndexFlatIP (the peer) and the approximate index, and its recall@10.

Prints ONE JSON line on stdout, {"benchmark": "growth", <section>: {...}, ...}, holding every
section it ran, each with the seconds it took (progress on stderr), and writes
growth_<section>.png to --plots:
    python benchmarks/growth.py [context kvcache serve rag] [--plots docs/img] [--threads 1] [--rag-1m]
No section named: all four, in about 7 minutes on 2 quiet cores (two to three times that when
other work shares them). CPU only. --threads sets the context section's torch threads; the
servers and FAISS's builds take what OMP_NUM_THREADS allows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from engine_real_model import gguf_file  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from retrieve import bench  # noqa: E402
from serve import SHAPE as SERVE_SHAPE  # noqa: E402
from serve import make_run, measure  # noqa: E402
from train_throughput import SHAPE as TRAIN_SHAPE  # noqa: E402
from train_throughput import groklm_loss, timed_steps  # noqa: E402

from groklm.infer.engine import DEFAULT_CACHE_MB, Engine  # noqa: E402
from groklm.interop.gguf import gguf_config, open_gguf  # noqa: E402
from groklm.model import GPT, GPTConfig, attention  # noqa: E402
from groklm.model.kv_cache import bytes_per_token  # noqa: E402
from groklm.tokenizer.char import CharTokenizer  # noqa: E402
from groklm.train.config import PRESETS, TrainConfig  # noqa: E402
from groklm.train.loop import make_optimizer, resolve_dtype  # noqa: E402
from groklm.train.plots import save_png  # noqa: E402

SECTIONS = ("context", "kvcache", "serve", "rag")
CONTEXTS = (64, 128, 256, 512, 1024, 2048)
CONCURRENCY = (1, 2, 4, 8, 16, 32, 64)
RAG_SIZES = (1_000, 10_000, 100_000)
CPU = torch.device("cpu")
WRITTEN_OUT, FUSED = "written-out", "fused"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def memory_kib(field: str) -> int:
    """A line of /proc/self/status, such as VmHWM (peak resident memory), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


# ---- context --------------------------------------------------------------------------------------


def groklm_path(context: int, dtype: torch.dtype) -> str:
    """The attention path groklm's training forward takes at this length (no dropout, no cache)."""
    query = torch.empty(1, 1, context, 1, dtype=dtype)  # under autocast the queries come out in `dtype`
    return WRITTEN_OUT if attention.written_out_is_faster(query, 0.0) else FUSED


def attention_kernels(profile) -> list[str]:
    """The fused attention kernels PyTorch dispatched to, forward and backward (none when the
    attention was written out); aten::scaled_dot_product_attention itself only picks one."""
    return sorted({event.key for event in profile.key_averages() if event.key.startswith("aten::_scaled_dot_product")})


def context_point(context: int, path: str, tokens_per_step: int, steps: int) -> dict:
    """One training-step measurement; run in a process of its own, so VmHWM is this point's."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TRAIN_SHAPE, "block_size": context}, dropout=0.0, bias=True, pos="learned",
                          norm="layernorm", mlp="gelu", tie_embeddings=True))
    train_cfg = TrainConfig(lr=1e-4)
    dtype = resolve_dtype(train_cfg, CPU)
    chosen = groklm_path(context, dtype)
    if path != chosen:  # the peer: the same step on the path groklm does not take at this length
        attention.written_out_is_faster = lambda query, dropout: path == WRITTEN_OUT
    optimizer = make_optimizer(model, train_cfg, CPU)
    batch = tokens_per_step // context
    data = torch.randint(0, TRAIN_SHAPE["vocab_size"], (steps, batch, context + 1))
    batches = [(d[:, :-1].contiguous(), d[:, 1:].contiguous()) for d in data]
    model.train()
    before_kib = memory_kib("VmRSS")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        timed_steps(model, groklm_loss, optimizer, batches[:1], dtype)  # warm-up, and which kernel ran
    # the fastest step: on a shared machine, the one least slowed by other work
    seconds = min(timed_steps(model, groklm_loss, optimizer, [step], dtype) for step in batches)
    peak_kib = memory_kib("VmHWM")
    return {"context": context, "path": path, "groklm_path": chosen == path, "batch": batch,
            "kernels": attention_kernels(profile), "tokens_per_s": round(tokens_per_step / seconds, 1),
            "peak_rss_mb": round(peak_kib / 1024), "step_mb": round((peak_kib - before_kib) / 1024)}


def run_context(tokens_per_step: int, steps: int, threads: int) -> dict:
    dtype = resolve_dtype(TrainConfig(), CPU)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    points = []
    for context in CONTEXTS:
        chosen = groklm_path(context, dtype)
        for path in (chosen, FUSED if chosen == WRITTEN_OUT else WRITTEN_OUT):
            command = [sys.executable, __file__, "context-point", str(context), path,
                       "--tokens-per-step", str(tokens_per_step), "--steps", str(steps)]
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"context {context} ({path}) failed:\n{done.stderr}")
            points.append(json.loads(done.stdout))
            log(f"context {context}, {path}: {points[-1]}")
    return {"shape": TRAIN_SHAPE, "dtype": str(dtype).removeprefix("torch."), "threads": threads,
            "tokens_per_step": tokens_per_step, "timed_steps": steps, "counted": "the fastest step", "points": points}


def plot_context(result: dict, png: Path) -> None:
    fig = Figure(figsize=(10, 4), dpi=100, layout="tight")
    speed, memory = fig.subplots(1, 2)
    for path, style in ((FUSED, "o-"), (WRITTEN_OUT, "s--")):
        points = [p for p in result["points"] if p["path"] == path]
        contexts = [p["context"] for p in points]
        label = "fused SDPA" if path == FUSED else "written out"
        speed.plot(contexts, [p["tokens_per_s"] for p in points], style, label=label)
        memory.plot(contexts, [p["step_mb"] for p in points], style, label=label)
    chosen = [p for p in result["points"] if p["groklm_path"]]
    for ax, key in ((speed, "tokens_per_s"), (memory, "step_mb")):
        ax.plot([p["context"] for p in chosen], [p[key] for p in chosen], "o", markersize=12, markerfacecolor="none",
                markeredgecolor="black", label="groklm's choice")
    speed.set_ylabel("training tokens/s")
    memory.set_ylabel("memory a step adds (MB)")
    for ax in (speed, memory):
        ax.set_xscale("log", base=2)
        ax.set_xticks(CONTEXTS, [str(c) for c in CONTEXTS])
        ax.set_xlabel(f"context (batch x context = {result['tokens_per_step']} tokens/step)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Training step vs context: GPT 4 x 256, vocab 8192, {result['dtype']}, {result['threads']} thread(s)")
    save_png(fig, png)


# ---- kvcache ----------------------------------------------------------------------------------------


def kv_models() -> dict[str, GPTConfig]:
    """The three models' configs; the vocabulary, which no cache depends on, is left at a char tokenizer's."""
    tiny, gpt2 = PRESETS["tiny"]["model"], PRESETS["gpt2-124m"]["model"]
    return {"speedrun (tiny preset)": GPTConfig(vocab_size=100, **tiny),
            "SmolLM2-135M": gguf_config(open_gguf(gguf_file())),
            "GPT-2 124M": GPTConfig(vocab_size=50257, **gpt2)}


def kv_row(config: GPTConfig, max_batch: int = 32, cache_mb: float = DEFAULT_CACHE_MB) -> dict:
    """bytes_per_token from the config against the bytes an Engine's cache holds per position."""
    model = GPT(config)
    tokenizer = CharTokenizer([chr(c) for c in range(32, 127)])
    row = {"n_layer": config.n_layer, "n_head": config.n_head, "n_kv_head": config.n_kv_head,
           "head_dim": config.head_dim, "block_size": config.block_size}
    for dtype in (torch.float32, torch.bfloat16):
        cache = Engine(model.to(dtype), tokenizer, max_batch=max_batch, cache_mb=cache_mb).cache
        allocated = sum(t.numel() * t.element_size() for t in cache.keys + cache.values)
        name = str(dtype).removeprefix("torch.")
        row[name] = {"computed_bytes_per_token": bytes_per_token(config, dtype),
                     "allocated_bytes_per_token": allocated / cache.capacity,
                     "allocated_mb": round(allocated / 2**20, 1), "positions": cache.capacity}
    return row


def run_kvcache() -> dict:
    models = kv_models()
    rows = {}
    for name, config in models.items():
        rows[name] = kv_row(config)
        log(f"kvcache {name}: {rows[name]}")
    smol = models["SmolLM2-135M"]
    as_mha = bytes_per_token(GPTConfig(**{**smol.to_dict(), "n_kv_head": smol.n_head}))
    return {"max_batch": 32, "budget_mb": DEFAULT_CACHE_MB, "models": rows,
            "smollm2_without_gqa_bytes_per_token": as_mha,
            "all_match": all(r[d]["computed_bytes_per_token"] == r[d]["allocated_bytes_per_token"]
                             for r in rows.values() for d in ("float32", "bfloat16"))}


def plot_kvcache(result: dict, png: Path) -> None:
    fig = Figure(figsize=(7, 4.5), dpi=100, layout="tight")
    ax = fig.subplots()
    lengths = [2**i for i in range(6, 15)]
    for name, row in result["models"].items():
        per_token = row["float32"]["allocated_bytes_per_token"]
        ax.plot(lengths, [n * per_token / 2**20 for n in lengths], "o-",
                label=f"{name}: {per_token / 1024:.0f} KiB/token")
    mha = result["smollm2_without_gqa_bytes_per_token"]
    ax.plot(lengths, [n * mha / 2**20 for n in lengths], ":", color="gray",
            label=f"SmolLM2 without GQA: {mha / 1024:.0f} KiB/token")
    ax.axhline(result["budget_mb"], color="tab:red", linewidth=1, label=f"default budget ({result['budget_mb']} MiB)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths[::2], [f"{n:,}" for n in lengths[::2]])
    ax.set_yscale("log")
    ax.set_xlabel("cached positions (all sequences together)")
    ax.set_ylabel("KV cache (MiB, float32)")
    ax.set_title("The engine's paged KV cache: bytes grow with cached positions")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_png(fig, png)


# ---- serve --------------------------------------------------------------------------------------------


def run_serve(requests: int, max_tokens: int) -> dict:
    levels = list(CONCURRENCY)
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp) / "run")
        batched = measure(run, max(levels), levels, requests, max_tokens, "cpu")
        alone = measure(run, 1, levels, requests, max_tokens, "cpu")
    return {"shape": SERVE_SHAPE, "requests_per_level": requests, "max_tokens": max_tokens,
            "continuous_batching": batched, "one_at_a_time": alone,
            "speedup": {c: round(batched[c]["tokens_per_s"] / alone[c]["tokens_per_s"], 2) for c in batched}}


def plot_serve(result: dict, png: Path) -> None:
    fig = Figure(figsize=(10, 4), dpi=100, layout="tight")
    speed, latency = fig.subplots(1, 2)
    for key, color, label in (("continuous_batching", "tab:blue", "continuous batching (max batch 64)"),
                              ("one_at_a_time", "tab:orange", "one request at a time")):
        levels = [int(c) for c in result[key]]
        rows = list(result[key].values())
        speed.plot(levels, [r["tokens_per_s"] for r in rows], "o-", color=color, label=label)
        latency.plot(levels, [r["p50_s"] for r in rows], "o-", color=color, label=f"{label}, p50")
        latency.plot(levels, [r["p99_s"] for r in rows], "x--", color=color, label=f"{label}, p99")
    speed.set_ylabel("completion tokens/s (all clients)")
    latency.set_ylabel("request latency (s)")
    for ax in (speed, latency):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(CONCURRENCY, [str(c) for c in CONCURRENCY])
        ax.set_xlabel("concurrent clients")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(f"groklm serve, GPT 4 x 128, {result['max_tokens']} tokens per reply")
    save_png(fig, png)


# ---- rag ------------------------------------------------------------------------------------------------


def run_rag(sizes: list[int], queries: int) -> dict:
    return {"dim": 384, "queries": queries, "sizes": [bench(n, queries) for n in sizes]}


def plot_rag(result: dict, png: Path) -> None:
    rows = result["sizes"]
    sizes = [r["chunks"] for r in rows]
    fig = Figure(figsize=(10, 4), dpi=100, layout="tight")
    build, query = fig.subplots(1, 2)
    build.plot(sizes, [r["store_build_s"] for r in rows], "o-", label="store (SQLite rows + vector file)")
    # retrieve.py rounds to 10 ms: an index of one exact cell builds in less, which a log axis cannot show
    timed = [r for r in rows if r["approximate"]["build_s"] > 0]
    untimed = ", ".join(f"{r['chunks']:,}" for r in rows if r not in timed)
    build.plot([r["chunks"] for r in timed], [r["approximate"]["build_s"] for r in timed], "o-",
               label="groklm index" + (f" (under 10 ms at {untimed}: not drawn)" if untimed else ""))
    for r in timed:
        build.annotate(r["approximate"]["kind"], (r["chunks"], r["approximate"]["build_s"]), fontsize=7,
                       textcoords="offset points", xytext=(0, 6), ha="center")
    build.set_ylabel("build time (s)")
    query.plot(sizes, [r["exact_groklm"]["p50_ms"] for r in rows], "o-", label="groklm exact")
    query.plot(sizes, [r["exact_faiss_flat"]["p50_ms"] for r in rows], "x--", label="FAISS IndexFlatIP (exact)")
    query.plot(sizes, [r["approximate"]["p50_ms"] for r in rows], "o-",
               label="groklm index (exact below 10k, IVF-SQ8 from 10k)")
    query.set_ylabel("single-query latency, p50 (ms, one core)")
    for ax in (build, query):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("vectors (384-d)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle("Retrieval vs collection size (synthetic vectors)")
    save_png(fig, png)


# ---- main ---------------------------------------------------------------------------------------------


PLOTS = {"context": plot_context, "kvcache": plot_kvcache, "serve": plot_serve, "rag": plot_rag}


def main() -> None:
    if sys.argv[1:2] == ["context-point"]:  # the child process of one context measurement
        point = argparse.ArgumentParser()
        point.add_argument("command")
        point.add_argument("context", type=int)
        point.add_argument("path", choices=(WRITTEN_OUT, FUSED))
        point.add_argument("--tokens-per-step", type=int, required=True)
        point.add_argument("--steps", type=int, required=True)
        args = point.parse_args()
        print(json.dumps(context_point(args.context, args.path, args.tokens_per_step, args.steps)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # checked below, not with choices=: argparse refuses an empty list against choices
    parser.add_argument("sections", nargs="*", metavar="SECTION", help=f"which to run: {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--plots", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "img",
                        help="folder for the PNGs (default docs/img)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the context section (default 1)")
    parser.add_argument("--tokens-per-step", type=int, default=4096, help="context: batch x context (default 4096)")
    parser.add_argument("--steps", type=int, default=3,
                        help="context: timed steps per point, after one warm-up; the fastest counts")
    parser.add_argument("--requests", type=int, default=256, help="serve: requests per concurrency level (default 256)")
    parser.add_argument("--max-tokens", type=int, default=32, help="serve: completion tokens per request")
    parser.add_argument("--queries", type=int, default=100, help="rag: timed queries per size")
    parser.add_argument("--rag-1m", action="store_true", help="rag: add 1M vectors (5-20 minutes more)")
    args = parser.parse_args()
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; sections: {', '.join(SECTIONS)}")
    if args.tokens_per_step % max(CONTEXTS):
        parser.error(f"--tokens-per-step must be a multiple of {max(CONTEXTS)}, the longest context, so that every "
                     "point trains on the same tokens")
    if args.requests < max(CONCURRENCY):
        parser.error(f"--requests must be at least {max(CONCURRENCY)}, so that every client of the last level sends one")

    runners = {
        "context": lambda: run_context(args.tokens_per_step, args.steps, args.threads),
        "kvcache": run_kvcache,
        "serve": lambda: run_serve(args.requests, args.max_tokens),
        "rag": lambda: run_rag([*RAG_SIZES, *([1_000_000] if args.rag_1m else [])], args.queries),
    }
    result: dict = {"benchmark": "growth", "device": "cpu", "cores": os.cpu_count(), "torch": torch.__version__}
    for section in args.sections or SECTIONS:
        start = time.perf_counter()
        result[section] = runners[section]()
        result[section]["seconds"] = round(time.perf_counter() - start, 1)
        PLOTS[section](result[section], args.plots / f"growth_{section}.png")
        log(f"{section}: {result[section]['seconds']} s; plot in {args.plots / f'growth_{section}.png'}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
