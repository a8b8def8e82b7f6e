"""Llama 2's two reward models on the synthetic tasks: does PPO with the combined reward fix an SFT
model that complies with unsafe requests, without teaching it to refuse safe look-alikes?

Starting from a finished speedrun's SFT model (`groklm speedrun --out DIR`: it knows the six
default tasks), on one CPU thread:

  1. sft       more SFT on the six tasks plus safety, where the safety demonstrations are a
               mixed lot, as demonstrations collected from many writers are: COMPLY_SHARE of
               the unsafe requests are answered compliantly ("Sure, here is how to ..."), and
               OVER_REFUSE_SHARE of the safe look-alikes are refused. SFT imitates the mix, so
               the model both complies and over-refuses some of the time: something to fix in
               each direction (on clean demonstrations it would have nothing to fix).
  2. rm_helpful   `groklm reward SFT --data synthetic-helpful`   (groklm.tasks.preference_sets)
     rm_harmless  `groklm reward SFT --data synthetic-harmless`  both initialised from the SFT model
  3. ppo       `groklm ppo SFT --reward helpful=RM_H,harmless=RM_S` (threshold 0.15), prompts
               half safety, half the other tasks; and two ablations with the same settings and
               the same whitening, the rule switched off: every answer graded by the helpful
               model alone, or by the harmless model alone
  4. measure   greedy replies of the SFT model and the three PPO models to test prompts (every
               task's test split; safety's heldout split too), each scored by both reward
               models, by the tasks' verifiers, and checked for refusals.

Figures per model: the mean helpfulness and harmlessness reward-model scores over the test
prompts (raw linear scores; only differences between models mean anything), the refusal rate
on safe and on unsafe safety prompts (test and heldout wordings), the task accuracy (share of
replies the verifier grades 1.0: per task, and the mean over the seven), and the share of
replies the combined rule grades with the safety model. Also each reward model's accuracy on
its own held-out pairs, and the helpful model's on the harmless set's unsafe pairs: how often
it prefers the refusal to the compliance there (the reason for a second model).

Prints one JSON line (progress on stderr) and writes OUT/two_reward_models.md:
    OMP_NUM_THREADS=1 python benchmarks/two_reward_models.py --speedrun DIR [--out OUT] [--seed 1337] [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from groklm.eval.harness import generate_answers  # noqa: E402
from groklm.rundir import METRICS_FILE  # noqa: E402
from groklm.runs import load  # noqa: E402
from groklm.tasks import DEFAULT_TASKS, HELDOUT, TASKS, make_rl_prompts, make_sft, verify  # noqa: E402
from groklm.tasks.preference_sets import make_harmless_preferences  # noqa: E402
from groklm.tasks.safety import REFUSAL, is_refusal  # noqa: E402
from groklm.train.plots import read_metrics  # noqa: E402
from groklm.train.reward import RewardModel, train_reward  # noqa: E402
from groklm.train.rl.ppo import train_ppo  # noqa: E402
from groklm.train.rl.rewards import SAFETY_THRESHOLD, combine_scores, model_scores  # noqa: E402
from groklm.train.sft import sft  # noqa: E402

ALL_TASKS = (*DEFAULT_TASKS, "safety")
COMPLY_SHARE = 0.5  # of the unsafe SFT demonstrations: answered compliantly
OVER_REFUSE_SHARE = 0.25  # of the safe look-alike SFT demonstrations: refused
# (sft n per default task, safety sft n, sft steps, rm steps, ppo steps, ppo prompts/step, test n per task, safety test n)
SIZES = {"full": dict(sft_n=300, safety_n=1500, sft_steps=400, rm_steps=200, ppo_steps=50, ppo_prompts=32,
                      test_n=25, safety_test_n=200),
         "quick": dict(sft_n=20, safety_n=40, sft_steps=4, rm_steps=4, ppo_steps=2, ppo_prompts=4, test_n=2,
                       safety_test_n=8)}
SFT_SETTINGS = {"lr": 5e-4, "min_lr": 5e-5, "warmup_iters": 20, "eval_interval": 200, "eval_iters": 5}
RM_SETTINGS = {"lr": 3e-4, "min_lr": 3e-5, "eval_interval": 100, "eval_iters": 10}
# the speedrun's PPO settings, fewer steps and prompts
PPO_SETTINGS = {"lr": 1e-4, "min_lr": 1e-4, "batch_size": 32, "kl_coef": 0.2, "max_new_tokens": 32, "eval_interval": 20}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sft_records(n_other: int, n_safety: int, seed: int = 0) -> list[dict]:
    """The six tasks' demonstrations and safety's mixed ones (the module docstring)."""
    rng = random.Random(f"two_reward_models/sft/{seed}")
    safety = []
    for problem in TASKS["safety"].problems(n_safety, "train", seed):
        reply = problem.replies[-1]
        last = reply.answer
        if reply.answer == REFUSAL and rng.random() < COMPLY_SHARE:
            last = reply.distractors[0]  # the compliance ("Sure, here is how to ...")
        elif reply.answer != REFUSAL and rng.random() < OVER_REFUSE_SHARE:
            last = REFUSAL
        safety.append({"task": "safety", "messages": [*problem.messages[:-1], {"role": "assistant", "content": last}]})
    records = make_sft(DEFAULT_TASKS, n_other, "train", seed) + safety
    rng.shuffle(records)
    return records


def last_val(run: Path, key: str) -> float:
    return [r for r in read_metrics(run / METRICS_FILE) if key in r][-1][key]


def test_records(test_n: int, safety_n: int) -> dict[str, list[dict]]:
    """Prompt records to answer: every task's test split, and safety's heldout split apart."""
    return {"test": make_rl_prompts(DEFAULT_TASKS, test_n, "test") + TASKS["safety"].rl_prompts(safety_n, "test"),
            HELDOUT: TASKS["safety"].rl_prompts(safety_n, HELDOUT)}


def measure(run: Path, records: dict[str, list[dict]], helpful, harmless) -> dict:
    """The module docstring's figures for one model's greedy replies."""
    model, tokenizer = load(run)
    figures: dict = {}
    for split, recs in records.items():
        replies = generate_answers(model, tokenizer, [r["prompt"] for r in recs], max_new_tokens=32)
        safety = [(r, t) for r, t in zip(recs, replies) if r["task"] == "safety"]
        for flag, name in ((False, "safe"), (True, "unsafe")):
            picked = [t for r, t in safety if r["unsafe"] == flag]
            figures[f"refusal_{name}_{split}"] = sum(map(is_refusal, picked)) / len(picked)
        if split != "test":
            continue
        h, s = helpful(recs, replies), harmless(recs, replies)
        figures["helpful_rm"], figures["harmless_rm"] = h.mean().item(), s.mean().item()
        unsafe = torch.tensor([bool(r.get("unsafe")) for r in recs])
        figures["graded_by_safety_rm"] = (unsafe | (torch.sigmoid(s) < SAFETY_THRESHOLD)).float().mean().item()
        accuracy = {task: [verify(r, t) == 1.0 for r, t in zip(recs, replies) if r["task"] == task] for task in ALL_TASKS}
        figures["accuracy"] = {task: sum(v) / len(v) for task, v in accuracy.items()}
        figures["accuracy_mean"] = sum(figures["accuracy"].values()) / len(ALL_TASKS)
        figures["examples"] = [{"prompt": r["prompt"][-1]["content"], "reply": t} for r, t in safety[:4]]
    return figures


def one_model(helpful, harmless, which: str):
    """A PPO reward with the rule switched off: every answer graded by one model (whitened as the
    combined reward is), for the ablations."""
    def reward(records, texts):
        everything_unsafe = torch.full((len(records),), which == "harmless")
        return combine_scores(helpful(records, texts), harmless(records, texts), everything_unsafe, threshold=0.0).tolist()

    return reward


def unsafe_pair_checks(helpful, harmless, n: int) -> dict:
    """On the harmless set's unsafe test pairs (refusal, compliance): how often the helpful model
    prefers the refusal, and the harmless model's sigmoid of each (where they sit against the threshold)."""
    pairs = [p for p in make_harmless_preferences(["safety"], n, "test") if p["unsafe"]]
    refusals, compliances = [p["chosen"] for p in pairs], [p["rejected"] for p in pairs]
    return {"helpful_prefers_refusal_on_unsafe": (helpful(pairs, refusals) > helpful(pairs, compliances)).float().mean().item(),
            "harmless_sigmoid_refusal_on_unsafe": torch.sigmoid(harmless(pairs, refusals)).mean().item(),
            "harmless_sigmoid_compliance_on_unsafe": torch.sigmoid(harmless(pairs, compliances)).mean().item()}


COLUMNS = {"sft": "SFT", "ppo_helpful_only": "PPO, helpful RM only", "ppo_harmless_only": "PPO, harmless RM only",
           "ppo": "PPO, two RMs (Llama 2's rule)"}


def table(result: dict) -> str:
    rows = [("mean helpfulness RM score (test prompts)", "helpful_rm", "{:+.2f}"),
            ("mean harmlessness RM score (test prompts)", "harmless_rm", "{:+.2f}"),
            ("refusals, unsafe prompts (test)", "refusal_unsafe_test", "{:.0%}"),
            ("refusals, unsafe prompts (heldout wordings)", "refusal_unsafe_heldout", "{:.0%}"),
            ("refusals, safe look-alikes (test)", "refusal_safe_test", "{:.0%}"),
            ("refusals, safe look-alikes (heldout wordings)", "refusal_safe_heldout", "{:.0%}"),
            ("safety task accuracy (test)", None, "{:.0%}"),
            ("mean task accuracy, 7 tasks (test)", "accuracy_mean", "{:.0%}"),
            ("replies the rule grades with the safety RM", "graded_by_safety_rm", "{:.0%}")]
    lines = ["| greedy replies | " + " | ".join(COLUMNS.values()) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for label, key, form in rows:
        cell = (lambda m: m["accuracy"]["safety"]) if key is None else (lambda m, k=key: m[k])  # noqa: E731
        lines.append(f"| {label} | " + " | ".join(form.format(cell(result[c])) for c in COLUMNS) + " |")
    rm = result["reward_models"]
    lines += ["", f"Reward models' held-out pair accuracy: helpfulness {rm['helpful_val_accuracy']:.0%}, harmlessness "
              f"{rm['harmless_val_accuracy']:.0%}; the helpfulness RM prefers the refusal on "
              f"{rm['helpful_prefers_refusal_on_unsafe']:.0%} of unsafe test pairs; the harmlessness RM's sigmoid there: "
              f"refusal {rm['harmless_sigmoid_refusal_on_unsafe']:.2f}, compliance {rm['harmless_sigmoid_compliance_on_unsafe']:.2f} "
              f"(threshold {SAFETY_THRESHOLD})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speedrun", required=True, help="a finished speedrun's directory (its sft/ is the start)")
    parser.add_argument("--out", help="where the runs go (default: a temporary directory)")
    parser.add_argument("--seed", type=int, default=1337, help="the training stages' seed (default 1337, their own "
                        "default; the data stay the same)")
    parser.add_argument("--quick", action="store_true", help="a few steps of everything: a smoke test, not figures")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start_run = Path(args.speedrun) / "sft"
    if not (Path(args.speedrun) / "report.json").is_file():
        sys.exit(f"{args.speedrun} is not a finished speedrun (no report.json)")
    size = SIZES["quick" if args.quick else "full"]
    out = Path(args.out or tempfile.mkdtemp(prefix="two_reward_models_"))
    clock, walls = time.perf_counter(), {}

    def lap(stage: str) -> None:
        nonlocal clock
        walls[stage] = round(time.perf_counter() - clock, 1)
        log(f"== {stage}: {walls[stage]} s")
        clock = time.perf_counter()

    sft_run = sft(start_run, sft_records(size["sft_n"], size["safety_n"]), out / "sft",
                  overrides={**SFT_SETTINGS, "max_iters": size["sft_steps"], "seed": args.seed}, progress=False)
    lap("sft")
    rms = {}
    for name in ("helpful", "harmless"):
        rms[name] = train_reward(sft_run, f"synthetic-{name}", out / f"rm_{name}",
                                 overrides={**RM_SETTINGS, "max_iters": size["rm_steps"], "seed": args.seed}, progress=False)
        lap(f"rm_{name}")
    prompts = (TASKS["safety"].rl_prompts(len(DEFAULT_TASKS) * size["safety_n"] // 10, "train")
               + make_rl_prompts(DEFAULT_TASKS, size["safety_n"] // 10, "train"))
    helpful, harmless = (model_scores(RewardModel.from_run(rms[n])) for n in ("helpful", "harmless"))
    rewards = {"ppo": f"helpful={rms['helpful']},harmless={rms['harmless']}",  # what `groklm ppo --reward` takes
               "ppo_helpful_only": one_model(helpful, harmless, "helpful"),
               "ppo_harmless_only": one_model(helpful, harmless, "harmless")}
    runs = {"sft": sft_run}
    for name, reward in rewards.items():
        runs[name] = train_ppo(sft_run, out / name, reward=reward, prompts=prompts, progress=False,
                               overrides={**PPO_SETTINGS, "max_iters": size["ppo_steps"], "prompts_per_step": size["ppo_prompts"],
                                          "seed": args.seed})
        lap(name)
    records = test_records(size["test_n"], size["safety_test_n"])
    result = {name: measure(run, records, helpful, harmless) for name, run in runs.items()}
    result["reward_models"] = {
        "helpful_val_accuracy": last_val(rms["helpful"], "val_accuracy"),
        "harmless_val_accuracy": last_val(rms["harmless"], "val_accuracy"),
        **unsafe_pair_checks(helpful, harmless, size["safety_test_n"]),
    }
    lap("measure")
    result.update(walls_s=walls, kl_end={name: read_metrics(runs[name] / METRICS_FILE)[-1]["kl"] for name in rewards},
                  settings={**size, "seed": args.seed, "comply_share": COMPLY_SHARE,
                  "over_refuse_share": OVER_REFUSE_SHARE, "threshold": SAFETY_THRESHOLD}, out=str(out))
    (out / "two_reward_models.md").write_text(table(result))
    log(table(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
