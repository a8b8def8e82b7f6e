"""Preference pairs from the model's own mistakes ("on-policy" pairs).

Hand-written wrong answers teach a model to avoid mistakes it may never make. Pairs built from
its own samples aim at the mistakes it does make:

    prompt ──► the model samples K replies ──► a verifier grades each
            chosen   = one of its correct replies (else the reference answer)
            rejected = one of its wrong replies            (prompts it always gets right: no pair)

DPO on such pairs pushes probability from the model's actual failure modes to answers it can
already produce (the idea behind iterative / online DPO). Sample from prompts the model was not
fine-tuned on (`--seed` other than the SFT data's 0): on memorised prompts its mistakes are
mostly sampling noise. `groklm data pairs RUN --out pairs.jsonl` writes the JSONL that
`groklm dpo` and `groklm reward` read with `--data`; each line also keeps the task and the
reference answer, so it can be graded again.
"""

from __future__ import annotations

import random
from pathlib import Path

from groklm.errors import ConfigError


def sample_pairs(model, tokenizer, tasks=None, n_per_task: int = 200, samples: int = 4, temperature: float = 1.0,
                 max_new_tokens: int = 64, seed: int = 1, progress: bool = False) -> tuple[list[dict], dict]:
    """(pairs, stats): preference pairs from `samples` graded replies to each train prompt.

    stats: per task, the share of sampled replies that were correct and the pairs made."""
    import torch
    from tqdm import tqdm

    from groklm.data.synthetic import get_tasks, make_rl_prompts, verify
    from groklm.tokenizer.chat import render_prompt
    from groklm.train.rollout import sample_responses

    if samples < 2 or n_per_task < 1:
        raise ConfigError(f"need --samples >= 2 and --n >= 1, got {samples} and {n_per_task}")
    records = make_rl_prompts([t.name for t in get_tasks(tasks)], n_per_task, "train", seed)
    generator = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    pairs, stats = [], {}
    chunk = max(1, 256 // samples)  # prompts per batch of generation
    for start in tqdm(range(0, len(records), chunk), desc="sampling", unit="batch", disable=not progress):
        batch = records[start : start + chunk]
        prompts = [render_prompt(tokenizer, r["prompt"]) for r in batch for _ in range(samples)]
        replies = sample_responses(model, tokenizer, prompts, max_new_tokens, temperature, generator=generator)
        specials = set(tokenizer.special_tokens.values())
        texts = [tokenizer.decode([t for t in reply if t not in specials and t < tokenizer.vocab_size]) for reply in replies]
        for i, record in enumerate(batch):
            answers = texts[i * samples : (i + 1) * samples]
            right = [a for a in answers if verify(record, a) >= 1.0]
            wrong = list(dict.fromkeys(a for a in answers if verify(record, a) < 1.0))
            task = stats.setdefault(record["task"], {"samples": 0, "correct": 0, "pairs": 0})
            task["samples"] += samples
            task["correct"] += len(right)
            if wrong:
                chosen = rng.choice(right) if right else record["answer"]
                pairs.append({"task": record["task"], "prompt": record["prompt"], "answer": record["answer"],
                              "chosen": chosen, "rejected": rng.choice(wrong)})
                task["pairs"] += 1
    for task in stats.values():
        task["sample_accuracy"] = task["correct"] / task["samples"]
    return pairs, stats


# ---- the command ----------------------------------------------------------------------------


def add_parser(actions) -> None:
    parser = actions.add_parser(
        "pairs",
        help="preference pairs from a run's own sampled replies, graded by the task verifiers",
        description="Sample --samples replies from RUN to each of --n train prompts per task, grade them with "
        "the synthetic tasks' verifiers, and write {prompt, chosen, rejected} JSONL: chosen is one of the "
        "model's correct replies (or the reference answer), rejected one of its wrong ones.",
    )
    parser.add_argument("run", metavar="RUN", help="the run to sample from (usually an SFT run)")
    parser.add_argument("--out", required=True, metavar="FILE", help="JSONL file to write")
    parser.add_argument("--tasks", default="all", help="comma-separated task names, or `all` (default)")
    parser.add_argument("--n", type=int, default=200, help="train prompts per task (default 200)")
    parser.add_argument("--samples", type=int, default=4, help="replies sampled per prompt (default 4)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1, help="which train problems (default 1; SFT's synthetic data is seed 0)")
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(func=run_pairs)


def run_pairs(args) -> None:
    import groklm
    from groklm.data.chat_data import write_jsonl

    tasks = None if args.tasks == "all" else [t.strip() for t in args.tasks.split(",") if t.strip()]
    model, tokenizer = groklm.load(args.run, device=args.device)
    pairs, stats = sample_pairs(model, tokenizer, tasks, args.n, args.samples, args.temperature, seed=args.seed, progress=True)
    count = write_jsonl(Path(args.out), pairs)
    for name, s in stats.items():
        print(f"{name:<12} sampled accuracy {s['sample_accuracy']:6.1%}  pairs {s['pairs']}")
    print(f"{args.out}: {count:,} pairs")
