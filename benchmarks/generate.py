"""Generation speed: groklm's Engine against Hugging Face `generate()` on identical weights.

A random GPT of the chosen shape is exported with groklm's exporter (the same code as
`groklm export`) and loaded by transformers, so both run the very same numbers. Both decode
greedily with a KV cache for a fixed number of new tokens (no early stop), fp32 on CPU.
Measured per batch size: time to first token (prefill + one token) and decode tokens/s
(new tokens of the whole batch per second after the first). Rounds alternate between the two
so that machine noise hits both alike; the median round counts.

Prints one JSON line on stdout (progress on stderr):
    python benchmarks/generate.py [--shape small|medium] [--new-tokens 128] [--rounds 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from groklm.infer.engine import Engine, SamplingParams  # noqa: E402
from groklm.interop.hf import export_model  # noqa: E402
from groklm.model import GPT, GPTConfig  # noqa: E402
from groklm.tokenizer import Tokenizer  # noqa: E402

SHAPES = {
    # the speedrun's model: where per-step overhead, not arithmetic, decides the speed
    "small": dict(block_size=512, n_layer=4, n_head=4, n_embd=128),
    # GPT-2-like proportions at a size two CPU cores can run
    "medium": dict(block_size=512, n_layer=8, n_head=8, n_embd=512),
}
PROMPT_TOKENS = 64


def groklm_run(engine: Engine, prompts: list[list[int]], new_tokens: int) -> tuple[float, float]:
    """(seconds to the first token, seconds for all new tokens) for one batch."""
    params = SamplingParams(max_tokens=new_tokens, temperature=0)
    for prompt in prompts:
        engine.add_request(prompt, params)
    start = time.perf_counter()
    first = None
    while engine.has_work():
        engine.step()
        first = first or time.perf_counter() - start
    return first, time.perf_counter() - start


def hf_run(model, prompts: list[list[int]], new_tokens: int) -> tuple[float, float]:
    ids = torch.tensor(prompts)
    options = dict(do_sample=False, use_cache=True, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        start = time.perf_counter()
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, min_new_tokens=1, **options)
        first = time.perf_counter() - start
        start = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens, **options)
        total = time.perf_counter() - start
    assert out.shape[1] == ids.shape[1] + new_tokens
    return first, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM

    # Bytes only: the benchmark needs a vocabulary, not a trained one; ids are random anyway.
    tokenizer = Tokenizer.train("x", vocab_size=256 + 3)
    shape = SHAPES[args.shape] | dict(vocab_size=8192)
    torch.manual_seed(0)
    model = GPT(GPTConfig(**shape)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        export_model(model, tmp)
        hf = AutoModelForCausalLM.from_pretrained(tmp, attn_implementation="sdpa").eval()

    # Identical weights: the logits agree before anything is timed.
    probe = torch.randint(0, 256, (1, 16))
    with torch.no_grad():
        assert torch.allclose(model(probe)[0], hf(probe).logits, atol=1e-4)

    results = dict(benchmark="generate", shape=args.shape, params=model.num_params(), new_tokens=args.new_tokens,
                   prompt_tokens=PROMPT_TOKENS, threads=torch.get_num_threads())
    for batch in (int(b) for b in args.batches.split(",")):
        engine = Engine(model, tokenizer, max_batch=batch)
        prompts = torch.randint(0, 256, (batch, PROMPT_TOKENS)).tolist()
        timings = {"groklm": [], "hf": []}
        groklm_run(engine, prompts, 4)  # warm up both
        hf_run(hf, prompts, 4)
        for r in range(args.rounds):
            timings["groklm"].append(groklm_run(engine, prompts, args.new_tokens))
            timings["hf"].append(hf_run(hf, prompts, args.new_tokens))
            print(f"batch {batch} round {r + 1}: groklm {timings['groklm'][-1][1]:.2f}s hf {timings['hf'][-1][1]:.2f}s", file=sys.stderr)
        for name, runs in timings.items():
            ttft = statistics.median(t[0] for t in runs)
            decode = statistics.median((args.new_tokens - 1) * batch / (t[1] - t[0]) for t in runs)
            results[f"b{batch}_{name}_ttft_ms"] = round(ttft * 1000, 2)
            results[f"b{batch}_{name}_decode_tok_s"] = round(decode, 1)
        results[f"b{batch}_decode_speedup"] = round(results[f"b{batch}_groklm_decode_tok_s"] / results[f"b{batch}_hf_decode_tok_s"], 2)
        results[f"b{batch}_ttft_speedup"] = round(results[f"b{batch}_hf_ttft_ms"] / results[f"b{batch}_groklm_ttft_ms"], 2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
