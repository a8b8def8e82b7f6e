"""The RL algorithm's settings, saved as the "rl" section of the run's config.json."""

from __future__ import annotations

from dataclasses import dataclass, fields

from groklm.errors import ConfigError
from groklm.train.config import parse_value, split_overrides

ALGOS = ("ppo", "grpo")


@dataclass
class RLConfig:
    algo: str = "ppo"  # ppo | grpo
    prompts_per_step: int = 16  # prompts answered per rollout (by all processes together)
    group_size: int = 4  # answers per prompt (grpo needs >= 2; ppo usually 1)
    max_new_tokens: int = 32
    temperature: float = 1.0  # sampling temperature, also applied to the log-probs it is trained on
    kl_coef: float = 0.05  # weight of the KL to the reference
    ppo_epochs: int = 2  # passes over each rollout batch
    clip_eps: float = 0.2  # the ratio is clipped to [1-eps, 1+eps]
    value_clip: float = 0.2  # new values stay within this of the rollout's values (ppo)
    vf_coef: float = 0.5  # weight of the value loss (ppo)
    gamma: float = 1.0  # discount per token
    lam: float = 0.95  # GAE: 0 = one-step TD (low variance), 1 = Monte Carlo (no bias)

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ConfigError(f"algo must be one of {', '.join(ALGOS)}; got {self.algo!r}")
        for name in ("prompts_per_step", "group_size", "max_new_tokens", "ppo_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.algo == "grpo" and self.group_size < 2:
            raise ConfigError("grpo compares answers within a group: group_size must be >= 2")
        if self.temperature <= 0:
            raise ConfigError("RL samples its answers: temperature must be > 0")
        if self.kl_coef < 0 or self.clip_eps <= 0 or self.value_clip <= 0 or self.vf_coef < 0:
            raise ConfigError("kl_coef and vf_coef must be >= 0; clip_eps and value_clip > 0")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ConfigError("gamma and lam must be in [0, 1]")

    @property
    def answers_per_prompt(self) -> int:
        return self.group_size if self.algo == "grpo" else 1


def split_rl_overrides(overrides: dict, model_class: type) -> tuple[dict, dict]:
    """--set key=value pairs -> (RLConfig values, TrainConfig values); the model's shape is fixed,
    so a key of `model_class` (the policy's config dataclass) is refused."""
    rl_fields = {f.name: f for f in fields(RLConfig)}
    rl = {k: parse_value(k, v, rl_fields[k].type) for k, v in overrides.items() if k in rl_fields}
    model, train = split_overrides({k: v for k, v in overrides.items() if k not in rl_fields}, model_class)
    if model:
        raise ConfigError(f"RL fine-tunes an existing model; its shape is fixed (cannot set {sorted(model)})")
    return rl, train
