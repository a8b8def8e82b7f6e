"""What grades RL's answers: one number per whole answer."""

from __future__ import annotations

from collections.abc import Callable

import torch

from groklm.tasks import verify
from groklm.train.reward import RewardModel

VERIFIER = "verifier"

# reward(records, completions) -> one score per completion
RewardFn = Callable[[list[dict], list[str]], list[float]]


def make_reward(spec, device: torch.device) -> RewardFn:
    """`verifier` (the synthetic tasks' checkers), a reward-model run directory, or a function."""
    if callable(spec):
        return spec
    if spec == VERIFIER:
        return lambda records, texts: [verify(r, t) for r, t in zip(records, texts)]
    model = RewardModel.from_run(spec, device=device)

    def score(records, texts):
        conversations = [[*r["prompt"], {"role": "assistant", "content": t}] for r, t in zip(records, texts)]
        return model.score(conversations).float().view(-1).tolist()

    return score
