"""The reward and DPO tests' shared material: a tiny base run and preference pairs that are easy
to learn (the chosen reply always ends in "yes", the rejected one in "no")."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from groklm.tokenizer.char import CharTokenizer

from helpers.runs import tiny_run

CHARS = "abcdefghijklmnopqrstuvwxyz ?!.,:0123456789\n"
# Fast settings for a few dozen steps of a tiny model on one CPU thread.
FAST = {"batch_size": 8, "lr": 3e-3, "min_lr": 3e-4, "warmup_iters": 5, "eval_interval": 20, "eval_iters": 4,
        "log_interval": 5, "device": "cpu"}


def preference_base(directory: Path, seed: int = 0) -> Path:
    """A random two-layer GPT with a character tokenizer over CHARS (in that order): a stand-in for SFT."""
    return tiny_run(directory, CharTokenizer(CHARS), seed=seed, n_layer=2, n_head=2, n_embd=32, block_size=64, dropout=0.0)


def easy_pairs(n: int, seed: int = 0) -> list[dict]:
    """The chosen reply always ends in "yes", the rejected one in "no"; the rest is noise."""
    rng = random.Random(seed)
    word = lambda k: "".join(rng.choice("abcdefgh") for _ in range(k))  # noqa: E731
    pairs = []
    for _ in range(n):
        prompt = [{"role": "user", "content": word(rng.randint(2, 6))}]
        pairs.append({"prompt": prompt, "chosen": f"{word(rng.randint(1, 4))} yes", "rejected": f"{word(rng.randint(1, 4))} no"})
    return pairs


def write_pairs(path: Path, pairs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return path


def trl_losses(per_token: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor, loss_type: str, beta: float, smoothing: float = 0.0):
    """TRL's DPOTrainer._compute_loss on given per-token log-probs (rows: chosen..., rejected...),
    with a stub trainer and a stub model that returns those log-probs; returns (loss, metrics)."""
    trl = pytest.importorskip("trl.trainer.dpo_trainer")
    n, T = per_token.size(0), per_token.size(1) + 1  # per_token[:, t] predicts token t + 1
    stub = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=SimpleNamespace(device="cpu", gather_for_metrics=lambda x: x, gather=lambda x: x),
        aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
        loss_types=[loss_type], loss_weights=[1.0], beta=beta, label_smoothing=smoothing, use_weighting=False,
        _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1)
    outputs = SimpleNamespace(log_probs=per_token * mask[:, 1:], entropy=torch.zeros(n, T - 1),
                              mean_logits=torch.zeros(n, T - 1), is_top1=torch.zeros(n, T - 1, dtype=torch.bool))
    model = lambda **kwargs: outputs  # noqa: E731
    ref_c, ref_r = ref.chunk(2)
    inputs = {"input_ids": torch.zeros(n, T, dtype=torch.long), "attention_mask": torch.ones(n, T, dtype=torch.long),
              "completion_mask": mask.long(), "ref_chosen_logps": ref_c, "ref_rejected_logps": ref_r}
    loss = trl.DPOTrainer._compute_loss(stub, model, inputs, False)
    return loss, {k: v[0] for k, v in stub._metrics["train"].items()}
