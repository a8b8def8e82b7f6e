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

import torch
from tqdm import tqdm

from groklm.errors import ConfigError
from groklm.infer.engine import sample_responses
from groklm.tasks import get_tasks, make_rl_prompts, verify
from groklm.tokenizer.chat import render_prompt


def sample_pairs(model, tokenizer, tasks=None, n_per_task: int = 200, samples: int = 4, temperature: float = 1.0,
                 max_new_tokens: int = 64, seed: int = 1, progress: bool = False) -> tuple[list[dict], dict]:
    """(pairs, stats): preference pairs from `samples` graded replies to each train prompt.

    stats: per task, the share of sampled replies that were correct and the pairs made."""
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
