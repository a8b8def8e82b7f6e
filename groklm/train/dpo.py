"""Direct Preference Optimization: learn from preference pairs with no reward model and no RL.

RLHF fits a reward model r, then maximises E[r] - beta * KL(policy || reference) with PPO.
That objective's optimum is known in closed form, pi*(y|x) ∝ ref(y|x) exp(r(x, y) / beta), so
r(x, y) = beta * log(pi*(y|x) / ref(y|x)) + (a term that cancels in comparisons). Putting this
implicit reward into the reward model's Bradley-Terry loss trains the policy directly:

    h    = (log pi(chosen) - log ref(chosen)) - (log pi(rejected) - log ref(rejected))
    loss = -log sigmoid(beta * h)                                       sigmoid (DPO)
         = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)    with label smoothing eps
         = (h - 1 / (2 beta))^2                                         ipo

log pi(y) is the sum of the reply's token log-probs under the policy; the reference is the
starting model, frozen. beta is the strength of the leash to it. Label smoothing (cDPO) says
"a fraction eps of the labels may be flipped", so the loss stops pushing once the policy is
confident. IPO regresses h to a fixed target instead of pushing it to infinity, which keeps
the policy from drifting arbitrarily far when the preferences are deterministic; like TRL
(and the IPO authors' experiments) it uses per-token average log-probs, so beta means the same
for short and long replies.

    groklm dpo RUN --data synthetic --out RUN_DPO [--beta 0.1] [--loss sigmoid|ipo]
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from groklm.errors import ConfigError
from groklm.model import GPT, GPTConfig
from groklm.model.lora import apply_lora_section, lora_disabled
from groklm.rundir import read_config
from groklm.train.preferences import check_finite, open_pair_run, resolve_base, resolve_data, sequence_logps, train_on_pairs
from groklm.train.stage import resolve_lora

STAGE = "dpo"
LOSSES = ("sigmoid", "ipo")
# Fine-tuning settings: DPO moves a model a little, from a model that is already good.
DEFAULTS = dict(batch_size=8, max_iters=300, lr=5e-5, min_lr=5e-6, warmup_iters=20, weight_decay=0.0,
                eval_interval=100, eval_iters=10, log_interval=10)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses and the implicit rewards beta * log(pi / ref) of chosen and rejected
    (detached: they are for logging)."""
    chosen_ratio = policy_chosen_logps - ref_chosen_logps
    rejected_ratio = policy_rejected_logps - ref_rejected_logps
    h = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ConfigError(f"unknown DPO loss {loss_type!r}; losses: {', '.join(LOSSES)}")
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def policy_and_reference(base: Path, lora: dict | None, device) -> tuple[GPT, GPT | None]:
    """(the policy to train, its frozen reference) on `device`, both the base run's model.

    With LoRA (`lora`: the run's "lora" section) the reference is None: the policy is the base
    plus adapters, and its reference is the same model with the adapters switched off, the same
    function as the starting model without a second copy of the weights."""
    reference = GPT.from_run(base, device)  # eval mode: no dropout in the reference
    reference.requires_grad_(False)
    if lora is not None:
        apply_lora_section(reference, lora)
        return reference.train(), None
    return copy.deepcopy(reference).requires_grad_(True).train(), reference


def reference_logps(reference, policy, ids: torch.Tensor, response: torch.Tensor, average: bool = False) -> torch.Tensor:
    """sequence_logps under the frozen reference, without gradients; reference None: the LoRA
    policy with its adapters off (see policy_and_reference)."""
    with torch.no_grad():
        if reference is not None:
            return sequence_logps(reference, ids, response, average)
        was_training = policy.training
        policy.eval()  # a reference never drops out
        try:
            with lora_disabled(policy):
                return sequence_logps(policy, ids, response, average)
        finally:
            policy.train(was_training)


def dpo_loss_fn(reference, beta: float, loss_type: str, label_smoothing: float, sft_weight: float = 0.0):
    """loss_fn(policy, (ids, response, lengths)) for the training loop.

    reference: the frozen reference model, or None for a LoRA policy (see policy_and_reference).

    sft_weight adds that much of the chosen replies' per-token negative log-likelihood (the
    "RPO" term). Plain DPO only cares about the *gap* between chosen and rejected, and often
    widens it by pushing both down; small models then drift to empty or odd replies. The NLL
    term keeps the chosen replies likely while the gap grows."""
    average = loss_type == "ipo"

    def loss_fn(policy, batch):
        ids, response, _ = batch
        policy_chosen, policy_rejected = sequence_logps(policy, ids, response, average).chunk(2)
        ref_chosen, ref_rejected = reference_logps(reference, policy, ids, response, average).chunk(2)
        losses, chosen, rejected = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected,
                                            beta, loss_type, label_smoothing)
        loss = losses.mean()
        if sft_weight:
            chosen_tokens = response.chunk(2)[0].sum(dim=1).clamp(min=1)
            per_token = policy_chosen if average else policy_chosen / chosen_tokens
            loss = loss - sft_weight * per_token.mean()
        return loss, {"rewards/chosen": chosen.mean(), "rewards/rejected": rejected.mean(),
                               "rewards/margins": (chosen - rejected).mean(),
                               "accuracy": (chosen > rejected).float().mean(),
                               "logps/chosen": policy_chosen.detach().mean(),
                               "logps/rejected": policy_rejected.detach().mean()}

    return loss_fn


def train_dpo(
    run: str | os.PathLike | None,
    data: str | None,
    out: str | os.PathLike,
    val: str | None = None,
    beta: float | None = None,
    loss_type: str | None = None,
    label_smoothing: float | None = None,
    sft_weight: float | None = None,
    overrides: dict | None = None,
    skip_bad_lines: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """DPO-train a copy of the GPT run `run` (the policy) against a frozen copy (the reference)
    into `out`, a normal GPT run ("stage": "dpo"); returns `out`. On resume the settings
    default to the saved ones, and the reference is the saved base run again."""
    run_dir, cfg, saved = open_pair_run(out, STAGE, DEFAULTS, overrides or {}, resume)
    base, model_config = resolve_base(run, saved)
    data, val = resolve_data(data, val, saved, STAGE)
    settings = {"beta": 0.1, "loss": "sigmoid", "label_smoothing": 0.0, "sft_weight": 0.0, **(saved or {}).get(STAGE, {})}
    beta = check_finite("beta", beta if beta is not None else settings["beta"])
    if beta <= 0:
        raise ConfigError(f"beta must be > 0, got {beta}")
    loss_type = loss_type or settings["loss"]
    if loss_type not in LOSSES:
        raise ConfigError(f"unknown DPO loss {loss_type!r}; losses: {', '.join(LOSSES)}")
    smoothing = check_finite("label_smoothing", label_smoothing if label_smoothing is not None else settings["label_smoothing"], 0.0, 0.5)
    sft_weight = check_finite("sft_weight", sft_weight if sft_weight is not None else settings["sft_weight"])
    if smoothing and loss_type == "ipo":
        raise ConfigError("label smoothing applies to the sigmoid loss only; drop --label-smoothing or use --loss sigmoid")
    if resume and read_config(base)["model"] != model_config:
        raise ConfigError(f"the reference run {base} no longer matches the model this run started from")
    lora = resolve_lora(cfg, base, saved, run_dir.path, GPTConfig.from_dict(model_config))
    config = {"stage": STAGE, "parent": base, "arch": "gpt", "model": model_config, "train": cfg.to_dict(),
              "data": {"spec": data, "val": val},
              STAGE: {"beta": beta, "loss": loss_type, "label_smoothing": smoothing, "sft_weight": sft_weight}}
    if lora is not None:
        config["lora"] = lora

    def build(device):
        policy, reference = policy_and_reference(base, lora, device)
        return policy, dpo_loss_fn(reference, beta, loss_type, smoothing, sft_weight)

    return train_on_pairs(run_dir, base, config, cfg, build, skip_bad_lines, resume, progress)
