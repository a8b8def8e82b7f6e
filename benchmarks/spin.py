"""SPIN on the speedrun's SFT model: what each self-play iteration does to the speedrun's evals.

Runs `groklm spin` (groklm/train/spin.py) from the speedrun's SFT run on the synthetic SFT data's
train split, then measures the SFT model (iteration 0) and every iteration with the speedrun's
own evals (groklm.eval.harness.evaluate_run, the same problems and seeds as the speedrun's
report): greedy accuracy on test problems, greedy accuracy on the heldout split (wordings no
training record uses), and the targeted metric, the expected verifier score of a reply sampled
at temperature 1 (SAMPLES_PER_PROBLEM per test problem) with its KL from the SFT model, all
means over the tasks. With the SPIN summary (pairs used, replies already the data's, losses,
reward margins), it prints ONE JSON line:

    OMP_NUM_THREADS=1 nice python benchmarks/spin.py [--sft runs/speedrun/sft] [--out DIR] [--prompts 600]

--chatty sets the share of wordier demonstrations in the data (the speedrun's SFT data had 0.3:
SPIN then pulls the model towards that same mix; 0 asks for the format the tasks want).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from groklm.eval.harness import evaluate_run  # noqa: E402
from groklm.experiments.report import task_mean  # noqa: E402
from groklm.experiments.speedrun import CHATTY_DEMONSTRATIONS, EVAL_TASKS, SAMPLES_PER_PROBLEM  # noqa: E402
from groklm.tasks import HELDOUT  # noqa: E402
from groklm.train.spin import train_spin  # noqa: E402


def measure(run: Path, sft: Path, n: int) -> dict:
    """The speedrun's three views of a chat model, each a mean over the tasks."""
    greedy = evaluate_run(run, tasks=EVAL_TASKS, n=n, seed=0)["tasks"]
    heldout = evaluate_run(run, tasks=EVAL_TASKS, n=n, seed=0, split=HELDOUT)["tasks"]
    reference = sft if run != sft else None
    sampled = evaluate_run(run, tasks=EVAL_TASKS, n=n, seed=0, temperature=1.0, samples=SAMPLES_PER_PROBLEM,
                           reference=reference)["tasks"]
    figures = {"test_accuracy": task_mean(greedy, "accuracy"), "heldout_accuracy": task_mean(heldout, "accuracy"),
               "targeted": task_mean(sampled, "mean_score"), "sampled_accuracy": task_mean(sampled, "accuracy")}
    if reference is not None:
        figures["kl_from_sft"] = task_mean(sampled, "kl")
    figures["per_task_test_accuracy"] = {task: r["accuracy"] for task, r in greedy.items()}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft", type=Path, default=Path("/work/runs/speedrun/sft"), help="the speedrun's SFT run")
    parser.add_argument("--out", type=Path, help="the SPIN directory (default: a temporary one)")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=600, help="SFT conversations answered per iteration")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--temperature", type=float, default=1.0, help="the model's replies: sampled (1) or greedy (0)")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-iters", type=int, default=60, help="training steps per iteration")
    parser.add_argument("--chatty", type=float, default=CHATTY_DEMONSTRATIONS, help="share of wordier demonstrations")
    parser.add_argument("--n", type=int, default=50, help="test problems per task (the speedrun: 100)")
    args = parser.parse_args()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch) / "spin"
        summary = train_spin(args.sft, "synthetic", out, iterations=args.iterations, prompts=args.prompts, beta=args.beta,
                             temperature=args.temperature,                              synthetic_chatty=args.chatty, progress=False,
                             overrides={"max_iters": args.max_iters, "lr": args.lr, "min_lr": args.lr / 10,
                                        "warmup_iters": min(10, args.max_iters // 5), "batch_size": 8,
                                        "eval_interval": args.max_iters,
                                        "device": "cpu"})
        spin_s = time.perf_counter() - started
        runs = [args.sft, *(Path(r["run"]) for r in summary if not r.get("converged"))]
        iterations = [{"iteration": i, **measure(run, args.sft, args.n)} for i, run in enumerate(runs)]
    print(json.dumps({
        "benchmark": "spin", "sft": str(args.sft),
        "settings": {k: getattr(args, k) for k in ("iterations", "prompts", "beta", "temperature", "lr", "max_iters", "chatty", "n")}
        | {"samples_per_problem": SAMPLES_PER_PROBLEM, "batch_size": 8},
        "spin": [{k: v for k, v in r.items() if k != "run"} for r in summary],
        "evals": iterations, "spin_s": round(spin_s, 1), "wall_s": round(time.perf_counter() - started, 1),
    }))


if __name__ == "__main__":
    main()
