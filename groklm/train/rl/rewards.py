"""What grades RL's answers: one number per whole answer.

Besides a verifier or one reward model, Llama 2's pair: a helpfulness and a harmlessness
(safety) reward model, `helpful=RUN,harmless=RUN[,threshold=0.15]`. Each answer is graded by
one of them (Llama 2, section 3.2.2):

    R = R_safety   if the prompt is tagged unsafe, or sigmoid(R_safety) < threshold
        R_helpful  otherwise

then whitened over the batch (mean 0, std 1; under torchrun, over each process's share). The tag is the prompt record's "unsafe" (the
safety task writes it; a record without one is not tagged). The threshold reads a score as a
probability, as Llama 2 did (its reward models end in a sigmoid): an answer the safety model
finds clearly unsafe is graded on safety even where the prompt was not tagged. The paper then
whitens LOGIT(R): the logit undoes the sigmoid, so what is whitened is the linear score, which
is what our models output (logit(sigmoid(s)) = s, so we never leave it). Whitening puts the
two models' scores, whatever their scales, on one scale that the KL penalty is weighed against.

Our reward models' zero point is arbitrary (the Bradley-Terry loss sees only differences), so
the threshold means "the safety model gives this answer well under even odds" only as far as
its scores sit around 0; benchmarks/two_reward_models.py reports where they sit (on unsafe
prompts, a mean sigmoid of 0.97 for the refusal and 0.03 for a compliance). With
whitening, ppo's logged "score" is the whitened reward: its mean over a batch is 0 by
construction, so judge such a run by the reward models' scores on test prompts instead.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from groklm.errors import ConfigError
from groklm.tasks import verify
from groklm.train.reward import RewardModel
from groklm.train.rl.objectives import whiten

VERIFIER = "verifier"
HELPFUL, HARMLESS, THRESHOLD = "helpful", "harmless", "threshold"
SAFETY_THRESHOLD = 0.15  # Llama 2's

# reward(records, completions) -> one score per completion
RewardFn = Callable[[list[dict], list[str]], list[float]]


def make_reward(spec, device: torch.device) -> RewardFn:
    """`verifier` (the synthetic tasks' checkers), a reward-model run directory,
    `helpful=RUN,harmless=RUN[,threshold=T]` (Llama 2's two models), or a function."""
    if callable(spec):
        return spec
    if spec == VERIFIER:
        return lambda records, texts: [verify(r, t) for r, t in zip(records, texts)]
    if str(spec).startswith((HELPFUL + "=", HARMLESS + "=")):
        return two_models(*parse_two_models(str(spec)), device)
    scores = model_scores(RewardModel.from_run(spec, device=device))
    return lambda records, texts: scores(records, texts).tolist()


def two_models(helpful_run, harmless_run, threshold: float, device: torch.device) -> RewardFn:
    """Llama 2's combined reward (the module docstring) from the two reward-model runs."""
    helpful, harmless = (model_scores(RewardModel.from_run(run, device=device)) for run in (helpful_run, harmless_run))

    def combined(records, texts):
        unsafe = torch.tensor([is_unsafe(r) for r in records], dtype=torch.bool)
        return combine_scores(helpful(records, texts), harmless(records, texts), unsafe, threshold).tolist()

    return combined


def model_scores(model: RewardModel) -> Callable[[list[dict], list[str]], torch.Tensor]:
    """scores(records, texts) -> the model's score of each text as the reply to its record's prompt (CPU floats)."""
    def scores(records, texts):
        conversations = [[*r["prompt"], {"role": "assistant", "content": t}] for r, t in zip(records, texts)]
        return model.score(conversations).float().view(-1).cpu()

    return scores


def parse_two_models(spec: str) -> tuple[str, str, float]:
    """"helpful=RUN,harmless=RUN[,threshold=T]" -> (helpful run, harmless run, threshold)."""
    parts = {}
    for item in spec.split(","):
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in (HELPFUL, HARMLESS, THRESHOLD) or key.strip() in parts or not value.strip():
            raise ConfigError(f"--reward {spec!r}: expected helpful=RUN,harmless=RUN[,threshold=T] (Llama 2's two reward "
                              f"models), each key once; {item!r} is not one of them")
        parts[key.strip()] = value.strip()
    if HELPFUL not in parts or HARMLESS not in parts:
        raise ConfigError(f"--reward {spec!r}: name both reward models, helpful=RUN,harmless=RUN")
    try:
        threshold = float(parts.get(THRESHOLD, SAFETY_THRESHOLD))
    except ValueError:
        raise ConfigError(f"--reward {spec!r}: threshold must be a number in (0, 1)") from None
    if not 0 < threshold < 1:
        raise ConfigError(f"--reward {spec!r}: threshold is a probability the safety score is compared with, in (0, 1); "
                          f"got {threshold}")
    return parts[HELPFUL], parts[HARMLESS], threshold


def is_unsafe(record: dict) -> bool:
    flag = record.get("unsafe", False)
    if not isinstance(flag, bool):
        raise ConfigError(f"a prompt record's 'unsafe' tag must be true or false, got {flag!r}")
    return flag


def combine_scores(helpful: torch.Tensor, harmless: torch.Tensor, unsafe: torch.Tensor,
                   threshold: float = SAFETY_THRESHOLD) -> torch.Tensor:
    """Llama 2's rule on the two models' linear scores (N,), and the unsafe tags (N,): the
    safety score where the prompt is unsafe or sigmoid(safety) < threshold, else the helpful
    one; whitened over the batch."""
    use_safety = unsafe | (torch.sigmoid(harmless) < threshold)
    chosen = torch.where(use_safety, harmless, helpful)
    return whiten(chosen, torch.ones_like(chosen))
