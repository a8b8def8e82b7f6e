"""Serving throughput: `groklm serve` with continuous batching against one request at a time.

Two real server processes run the same random GPT (the speedrun's shape by default): one with
--max-batch 32 (continuous batching) and one with --max-batch 1 (requests queue and run one
after another, like a server without batching). For each number of concurrent clients, every
client sends non-streamed chat requests (greedy, the same distinct prompts for both servers,
so both do exactly the same work) until `--requests` have completed. Measured: requests/s,
completion tokens/s, and p50/p99 request latency. The servers run one after the other, never
at the same time, so they do not compete for the CPU.

Prints one JSON line on stdout (progress on stderr):
    python benchmarks/serve.py [--clients 1,8,16,32] [--requests 64] [--max-tokens 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import torch
from tqdm import tqdm

from groklm.model import GPT, GPTConfig
from groklm.model.weights import save_weights
from groklm.rundir import write_json
from groklm.tokenizer.char import CharTokenizer

SHAPE = dict(block_size=512, n_layer=4, n_head=4, n_embd=128)  # the speedrun's model
MODEL = "bench"


def make_run(directory: Path) -> Path:
    tokenizer = CharTokenizer(sorted(set(string.printable)))
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, **SHAPE)
    directory.mkdir(parents=True)
    save_weights(GPT(config), directory / "model.safetensors")
    write_json(directory / "config.json", {"model": config.to_dict(), "stage": "sft", "arch": "gpt"})
    tokenizer.save(directory / "tokenizer")
    return directory


def start_server(run: Path, max_batch: int, device: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "groklm", "serve", str(run), "--port", str(port), "--model-name", MODEL,
               "--max-batch", str(max_batch), "--max-waiting", "256", "--device", device]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=Path(__file__).parent.parent)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit("the server did not come up")


def request_body(i: int, max_tokens: int) -> dict:
    return {"model": MODEL, "temperature": 0, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": f"Request {i}: what comes after {i * 7 % 1000}?"}]}


async def load(url: str, clients: int, requests: int, max_tokens: int, progress: tqdm) -> dict:
    """`clients` concurrent clients send `requests` requests in all; timings of each."""
    latencies: list[float] = []
    tokens = 0
    queue = list(range(requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        async def client() -> None:
            nonlocal tokens
            while queue:
                i = queue.pop()
                start = time.perf_counter()
                response = await http.post("/v1/chat/completions", json=request_body(i, max_tokens))
                response.raise_for_status()
                latencies.append(time.perf_counter() - start)
                tokens += response.json()["usage"]["completion_tokens"]
                progress.update()

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - start
    latencies.sort()
    return {"requests_per_s": round(requests / wall, 2), "tokens_per_s": round(tokens / wall, 1),
            "p50_s": round(statistics.median(latencies), 3),
            "p99_s": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 3),
            "completion_tokens": tokens}


def measure(run: Path, max_batch: int, levels: list[int], requests: int, max_tokens: int, device: str) -> dict:
    process, url = start_server(run, max_batch, device)
    try:
        asyncio.run(load(url, 1, 2, max_tokens, tqdm(disable=True)))  # warm up
        results = {}
        for clients in levels:
            with tqdm(total=requests, desc=f"max_batch {max_batch}, {clients} clients", file=sys.stderr) as bar:
                results[str(clients)] = asyncio.run(load(url, clients, requests, max_tokens, bar))
        return results
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,8,16,32", help="concurrent clients per level (default 1,8,16,32)")
    parser.add_argument("--requests", type=int, default=64, help="requests per level (default 64)")
    parser.add_argument("--max-tokens", type=int, default=32, help="completion tokens per request (default 32)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp) / "run")
        batched = measure(run, 32, levels, args.requests, args.max_tokens, args.device)
        alone = measure(run, 1, levels, args.requests, args.max_tokens, args.device)
    speedup = {c: round(batched[c]["requests_per_s"] / alone[c]["requests_per_s"], 2) for c in batched}
    print(json.dumps({"benchmark": "serve", "device": args.device, "shape": SHAPE, "requests": args.requests,
                      "max_tokens": args.max_tokens, "cpu_threads": torch.get_num_threads(), "cores": os.cpu_count(),
                      "continuous_batching": batched, "one_at_a_time": alone, "speedup": speedup}))


if __name__ == "__main__":
    main()
