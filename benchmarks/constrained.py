"""Constrained decoding's cost: per-token decode time with and without a grammar, and compile time.

Decode: the same random-init GPT of the speedrun's shape (4096-token BPE, context 1024), the
same prompts and seeds, generating --new-tokens tokens per request with and without a
JSON-schema grammar (an object holding a list of at least four strings: with these seeds no
request closed it early at 96 or 128 tokens, so the batch stays full; a request that ended
early would leave a smaller batch, dearer per token, and count as the grammar's overhead). Per-token time is
the decode steps' time divided by the tokens they produced (prefill excluded; both ways'
token counts are reported), at batch 1 and 8; rounds alternate between the two ways, in
turn first, so machine noise hits both alike, and the median round counts. Both clocks are
reported: CPU time of this process, every thread included (steadier on a shared machine),
and wall time. The overhead is constrained / unconstrained - 1 (target: at most 10% at
batch 8).

Compile: every schema of benchmarks/schemas.py's suite, schema -> regex (with numeric ranges)
-> compiled grammar (llguidance builds its masks lazily), cold (grammar cache emptied) and cached.

Prints one JSON line on stdout (progress on stderr):
    python benchmarks/constrained.py [--new-tokens 96] [--rounds 3] [--n-embd 128] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from schemas import SUITE, build_model_run  # noqa: E402

from groklm.infer import constrain  # noqa: E402
from groklm.infer.engine import Engine, SamplingParams  # noqa: E402
from groklm.infer.schema_regex import schema_regex  # noqa: E402
from groklm.tokenizer.chat import render_prompt  # noqa: E402

os.environ.setdefault("GROKLM_TRACES", "off")
NOTES = {"type": "object", "properties": {"notes": {"type": "array", "items": {"type": "string"}, "minItems": 4}},
         "required": ["notes"]}


def decode(engine: Engine, prompts: list[list[int]], new_tokens: int, grammar) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, tokens) of the decode steps after the prefill, for one batch."""
    for i, prompt in enumerate(prompts):
        engine.add_request(prompt, SamplingParams(max_tokens=new_tokens, temperature=1.0, seed=i), grammar)
    engine.step()  # prefill every request (and its first token): not decode time
    wall, cpu, tokens = time.perf_counter(), time.process_time(), 0
    while engine.has_work():
        tokens += sum(len(d.token_ids) for d in engine.step())
    return time.perf_counter() - wall, time.process_time() - cpu, tokens


def compile_times(tokenizer) -> tuple[list[float], list[float]]:
    cold, warm = [], []
    for model in SUITE:
        pattern_time = time.perf_counter()
        pattern = schema_regex(model.model_json_schema())
        constrain.CACHE.clear()  # forget every compiled grammar: a cold start
        constrain.Grammar.from_regex(pattern, tokenizer)
        cold.append(time.perf_counter() - pattern_time)
        again = time.perf_counter()
        constrain.Grammar.from_regex(schema_regex(model.model_json_schema()), tokenizer)
        warm.append(time.perf_counter() - again)
    return cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine.from_run(build_model_run(Path(tmp) / "run"), max_batch=max(int(b) for b in args.batches.split(",")))
    tokenizer = engine.tokenizer
    results = {"benchmark": "constrained", "params": engine.model.num_params(), "vocab": tokenizer.vocab_size,
               "new_tokens": args.new_tokens, "threads": torch.get_num_threads()}
    grammar = constrain.Grammar.from_regex(schema_regex(NOTES), tokenizer)
    for batch in (int(b) for b in args.batches.split(",")):
        prompts = [render_prompt(tokenizer, [{"role": "user", "content": f"Take {i} notes."}]) for i in range(batch)]
        decode(engine, prompts, 4, None)  # warm up
        per_token = {(way, clock): [] for way in ("unconstrained", "constrained") for clock in ("wall", "cpu")}
        ways = [("unconstrained", None), ("constrained", grammar)]
        for r in range(args.rounds):
            for way, g in ways if r % 2 == 0 else ways[::-1]:
                wall, cpu, tokens = decode(engine, prompts, args.new_tokens, g)
                per_token[way, "wall"].append(wall / max(tokens, 1))
                per_token[way, "cpu"].append(cpu / max(tokens, 1))
                results[f"b{batch}_{way}_tokens"] = tokens
            print(f"batch {batch} round {r + 1}: " + ", ".join(
                f"{way} {clock} {v[-1] * 1000:.3f} ms/token" for (way, clock), v in per_token.items()), file=sys.stderr)
        for clock in ("cpu", "wall"):
            free, bound = (statistics.median(per_token[way, clock]) for way in ("unconstrained", "constrained"))
            results[f"b{batch}_unconstrained_{clock}_ms_per_token"] = round(free * 1000, 3)
            results[f"b{batch}_constrained_{clock}_ms_per_token"] = round(bound * 1000, 3)
            results[f"b{batch}_overhead_{clock}_pct"] = round(100 * (bound / free - 1), 1)
    cold, warm = compile_times(tokenizer)
    results.update(schemas=len(cold), compile_ms_median=round(1000 * statistics.median(cold), 1),
                   compile_ms_max=round(1000 * max(cold), 1), compile_cached_ms_median=round(1000 * statistics.median(warm), 2))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
