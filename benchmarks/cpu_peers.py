"""SmolLM2-135M on a CPU: groklm's engine (float32, int8 and int4 weights) beside llama.cpp and
transformers, on the same GGUF file, with the same threads, in one run.

The peers:
- llama.cpp through `llama-cpp-python` (a benchmark dependency, never a runtime one: `pip install
  llama-cpp-python` builds it from source with this machine's compiler, about 6-10 minutes) runs
  the GGUF file as published (Q4_1 blocks, a Q8_0 token table);
- transformers loads the same file dequantized to float32 (`from_pretrained(folder, gguf_file=...)`).
groklm imports it (`groklm import smollm2-135m-instruct`, float32) and runs it as is, then with
weight-only int8 and int4 (`--quantize`, groklm/model/quantize.py).

Measured, each contender in turn, `--repeats` times, best of each (the least disturbed by other work):
- decode tokens/s at batch 1, counted after the first token, a fixed number of tokens (stop tokens
  ignored on every side);
- aggregate decode tokens/s of 8 requests decoded together (llama-cpp-python decodes one sequence
  at a time: its figure is the single-stream rate, which is what the goal compares against);
- time to first token for a 500-token prompt (prefill and the first token, nothing cached);
- what each groklm weight format costs in quality, against groklm's float32 model: the largest
  logit difference and the mean KL over the 500-token prompt's positions, how often the most likely
  next token is the same, and, with --eval N, accuracy on N problems of a few synthetic tasks.

Prints one JSON line on stdout (progress on stderr). groklm_* keys are the int4 engine's (the
fastest): ratio_b1 = groklm / llama.cpp at batch 1 (goal >= 0.5), ratio_b8_vs_llamacpp_b1 =
groklm's aggregate at 8 / llama.cpp's single stream (goal >= 1.5), ratio_ttft = llama.cpp's time
to first token / groklm's (goal >= 1).

    python benchmarks/cpu_peers.py [--threads 2] [--tokens 64] [--repeats 3] [--eval 40]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from engine_real_model import NAME, STORY, gguf_file, hf_decode_rate, hf_generate, log, our_decode_rate, our_first_token, timed

from groklm.eval.harness import evaluate_model
from groklm.infer.engine import Engine
from groklm.interop.imports import import_run
from groklm.model.quantize import QUANTIZATIONS, quantize_weights
from groklm.runs import load

EVAL_TASKS = "extract,arithmetic:mc,spam:mc"  # tasks SmolLM2 does better than chance on without fine-tuning


def llama_cpp_model(path: Path, threads: int, context: int):
    try:
        from llama_cpp import Llama
    except ImportError:
        sys.exit("llama-cpp-python is not installed: pip install llama-cpp-python (builds from source, ~10 minutes)")
    return Llama(model_path=str(path), n_threads=threads, n_threads_batch=threads, n_ctx=context, n_batch=512,
                 verbose=False)


def llama_cpp_run(llm, prompt: list[int], tokens: int) -> tuple[float, float]:
    """(time to first token, decode tokens/s after it): greedy, exactly `tokens` tokens, nothing
    reused from an earlier call."""
    llm.reset()
    start = time.perf_counter()
    stream = llm.generate(prompt, top_k=1, temp=0.0, reset=True)
    next(stream)
    first = time.perf_counter()
    for _, _ in zip(range(tokens - 1), stream):
        pass
    done = time.perf_counter()
    stream.close()
    return first - start, (tokens - 1) / (done - first)


def quality(model, reference_logp: torch.Tensor, prompt: list[int]) -> dict:
    """How far a model's next-token distributions over `prompt` are from the float model's."""
    with torch.no_grad():
        logp = model(torch.tensor([prompt]))[0][0].float().log_softmax(-1)
    return {"max_logit_diff": round(float((logp - reference_logp).abs().max()), 3),
            "mean_kl": round(float((reference_logp.exp() * (reference_logp - logp)).sum(-1).mean()), 5),
            "top1_agreement": round(float((logp.argmax(-1) == reference_logp.argmax(-1)).float().mean()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 8), help="threads for every contender")
    parser.add_argument("--tokens", type=int, default=64, help="tokens decoded per row for the decode rates")
    parser.add_argument("--prompt-tokens", type=int, default=500, help="the time-to-first-token prompt")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eval", type=int, default=40, metavar="N", help=f"problems per task of {EVAL_TASKS} (0: skip)")
    parser.add_argument("--no-transformers", action="store_true", help="leave transformers out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = gguf_file()
    llm = llama_cpp_model(path, args.threads, context=args.prompt_tokens + args.tokens + 64)
    result: dict = {"model": NAME, "threads": args.threads, "torch": torch.__version__, "gguf": path.name,
                    "groklm_weights": "int4"}

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "smol"
        seconds, _ = timed(lambda: import_run(NAME, run, block_size=1024))
        log(f"imported {NAME} in {seconds:.1f} s; {args.threads} threads")
        models = {}
        for kind in ("float32", *QUANTIZATIONS):
            model, tokenizer = load(run)
            if kind != "float32":
                quantize_weights(model, kind)
            models[kind] = model
    story = tokenizer.encode(STORY * 40)
    long_prompt = story[: args.prompt_tokens]
    b1_prompt, b8_prompts = story[:24], [story[i * 20: i * 20 + 24] for i in range(8)]

    with torch.no_grad():
        reference = models["float32"](torch.tensor([long_prompt]))[0][0].float().log_softmax(-1)
    for kind, model in models.items():
        if kind != "float32":
            result[kind] = quality(model, reference, long_prompt)
            log(f"{kind} against float32: {result[kind]}")

    engines = {kind: Engine(model, tokenizer, max_batch=8, prefix_cache=False) for kind, model in models.items()}
    for engine in engines.values():
        engine.stop_ids = set()  # a fixed number of tokens on every side
        our_first_token(engine, long_prompt[:50])  # warm up
    hf = None
    if not args.no_transformers:
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
        hf_generate(hf, [b1_prompt], 2)

    best: dict[str, float] = {}

    def keep(key: str, value: float, lower_is_better: bool = False) -> None:
        old = best.get(key)
        best[key] = value if old is None else (min(old, value) if lower_is_better else max(old, value))

    for repeat in range(args.repeats):
        log(f"repeat {repeat + 1}/{args.repeats}")
        first, rate = llama_cpp_run(llm, [long_prompt[0] + repeat + 1] + long_prompt[1:], 2)  # a prompt never seen before
        keep("llamacpp_ttft_s", first, lower_is_better=True)
        keep("llamacpp_b1_tps", llama_cpp_run(llm, b1_prompt, args.tokens)[1])
        for kind, engine in engines.items():
            keep(f"{kind}_ttft_s", our_first_token(engine, long_prompt), lower_is_better=True)
            keep(f"{kind}_b1_tps", our_decode_rate(engine, [b1_prompt], args.tokens))
            keep(f"{kind}_b8_aggregate_tps", our_decode_rate(engine, b8_prompts, args.tokens))
        if hf is not None:
            keep("transformers_ttft_s", timed(lambda: hf_generate(hf, [long_prompt], 1))[0], lower_is_better=True)
            keep("transformers_b1_tps", hf_decode_rate(hf, [b1_prompt], args.tokens))
            keep("transformers_b8_aggregate_tps", hf_decode_rate(hf, b8_prompts, args.tokens))
        log("  " + ", ".join(f"{k} {v:.3g}" for k, v in best.items()))
    result |= {key: round(value, 3 if key.endswith("_s") else 1) for key, value in best.items()}

    ours = "int4"
    result |= {
        "groklm_b1_tps": result[f"{ours}_b1_tps"], "groklm_b8_aggregate_tps": result[f"{ours}_b8_aggregate_tps"],
        "groklm_ttft_s": result[f"{ours}_ttft_s"],
        "ratio_b1": round(result[f"{ours}_b1_tps"] / result["llamacpp_b1_tps"], 2),
        "ratio_b8_vs_llamacpp_b1": round(result[f"{ours}_b8_aggregate_tps"] / result["llamacpp_b1_tps"], 2),
        "ratio_ttft": round(result["llamacpp_ttft_s"] / result[f"{ours}_ttft_s"], 2),
    }
    if hf is not None:
        result["ratio_b1_vs_transformers"] = round(result[f"{ours}_b1_tps"] / result["transformers_b1_tps"], 2)

    if args.eval:
        for kind, model in models.items():
            scores = evaluate_model(model, tokenizer, EVAL_TASKS, n=args.eval, seed=0, max_new_tokens=48)
            result.setdefault(kind, {})["eval_accuracy"] = {task: round(r["accuracy"], 3) for task, r in scores.items()}
            log(f"{kind} eval: {result[kind]['eval_accuracy']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
