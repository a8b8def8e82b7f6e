"""A reward model: the transformer with a scalar head, trained on which of two replies is better.

    conversation ──► GPT backbone ──► hidden state of the LAST token ──► Linear(n_embd, 1) ──► r

The last token has attended to the whole conversation, so its hidden state can summarise it.
Training uses the Bradley-Terry model of preferences: P(chosen beats rejected) is
sigmoid(r_chosen - r_rejected), and the loss is its negative log-likelihood,

    loss = -log sigmoid(r_chosen - r_rejected - margin)

Only differences of rewards matter, so the scale's zero point is arbitrary (the head has no
bias). A margin > 0 asks for the chosen reply to win by at least that much. PPO later calls
`RewardModel.from_run(dir).score(conversations)` to grade the policy's replies.

    groklm reward RUN --data synthetic --out RM
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from groklm.errors import CheckpointError, ConfigError
from groklm.model import GPT, GPTConfig
from groklm.model.lora import apply_lora_section, check_lora_base, load_trained_weights
from groklm.model.weights import load_weights
from groklm.rundir import TOKENIZER_DIR, WEIGHTS_FILE, read_config
from groklm.tokenizer.chat import render_chat
from groklm.tokenizer.load import load_tokenizer
from groklm.train.preferences import check_finite, open_pair_run, resolve_base, resolve_data, train_on_pairs
from groklm.train.stage import resolve_lora

STAGE = "reward"
# Fine-tuning settings: a low learning rate keeps most of what the base model knows.
DEFAULTS = dict(batch_size=8, max_iters=300, lr=1e-4, min_lr=1e-5, warmup_iters=20, weight_decay=0.0,
                eval_interval=100, eval_iters=10, log_interval=10)


def reward_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Per-pair Bradley-Terry loss: -log P(chosen beats rejected by at least `margin`)."""
    return -F.logsigmoid(chosen - rejected - margin)


class RewardModel(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.n_embd, 1, bias=False)
        # Zero: every reply starts at reward 0, so the first loss is exactly log 2 (a coin flip).
        nn.init.zeros_(self.head.weight)
        if not backbone.config.tie_embeddings:
            # The LM head is not used; freezing it keeps it out of the optimizer (and out of DDP's
            # wait for gradients that never come). A tied one is the embedding table: it trains.
            backbone.lm_head.weight.requires_grad_(False)
        self.tokenizer = None  # set by from_run; score() needs it

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """ids (N, T) right-padded, lengths (N,) real tokens per row -> rewards (N,).

        Right padding comes after the last real token, and attention is causal, so the
        padding cannot change the hidden state read at position lengths - 1."""
        hidden = self.backbone.hidden_states(ids)
        last = hidden[torch.arange(ids.size(0), device=ids.device), lengths.to(ids.device) - 1]
        return self.head(last).squeeze(-1)

    @torch.no_grad()
    def score(self, conversations: list[list[dict]], tokenizer=None) -> torch.Tensor:
        """Rewards (N,) of conversations, each a message list ending with the reply to grade.

        A conversation longer than block_size keeps its last block_size tokens: the reply
        and as much of the context before it as fits."""
        tokenizer = tokenizer or self.tokenizer
        if tokenizer is None:
            raise ConfigError("score() needs a tokenizer: load with RewardModel.from_run or pass tokenizer=")
        block = self.backbone.config.block_size
        rows = [render_chat(tokenizer, messages)[0][-block:] for messages in conversations]
        device = self.head.weight.device
        ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = torch.tensor(row)
        lengths = torch.tensor([len(row) for row in rows])
        return self(ids.to(device), lengths.to(device)).float()

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str | torch.device = "cpu") -> "RewardModel":
        """Load a reward run (config.json "arch": "reward", backbone + head weights, tokenizer)."""
        config = read_config(run_dir)
        if config.get("arch") != "reward":
            raise CheckpointError(f"{run_dir} is not a reward model (its arch is {config.get('arch')!r}); train one with `groklm reward`")
        backbone = GPT(GPTConfig.from_dict(config["model"]))
        if "lora" in config:  # the base run's weights, its adapters, then the adapters and head saved here
            load_weights(backbone, check_lora_base(config["lora"], run_dir) / WEIGHTS_FILE)
            apply_lora_section(backbone, config["lora"])
        model = cls(backbone)
        load_trained_weights(model, run_dir)
        if (Path(run_dir) / TOKENIZER_DIR).is_dir():
            model.tokenizer = load_tokenizer(Path(run_dir) / TOKENIZER_DIR)
        return model.to(device).eval()


def reward_loss_fn(margin: float):
    """loss_fn(model, (ids, response, lengths)) for the training loop, with accuracy and rewards."""
    def loss_fn(model, batch):
        ids, _, lengths = batch
        chosen, rejected = model(ids, lengths).float().chunk(2)
        loss = reward_loss(chosen, rejected, margin).mean()
        return loss, {"accuracy": (chosen > rejected).float().mean(), "rewards/chosen": chosen.mean(),
                      "rewards/rejected": rejected.mean(), "rewards/margins": (chosen - rejected).mean()}

    return loss_fn


def train_reward(
    run: str | os.PathLike | None,
    data: str | None,
    out: str | os.PathLike,
    val: str | None = None,
    margin: float | None = None,
    overrides: dict | None = None,
    skip_bad_lines: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Train a reward model initialised from the GPT run `run` into `out`; returns `out`.

    data: a preferences JSONL file, "synthetic" or "synthetic:task1,task2"; val: held-out
    pairs (default: synthetic's test split, or a tenth of the file). On resume, run, data,
    val and margin default to the saved ones."""
    run_dir, cfg, saved = open_pair_run(out, STAGE, DEFAULTS, overrides or {}, resume)
    base, model_config = resolve_base(run, saved)
    data, val = resolve_data(data, val, saved, STAGE)
    if margin is None:
        margin = saved[STAGE]["margin"] if saved else 0.0
    margin = check_finite("margin", margin)
    lora = resolve_lora(cfg, base, saved, run_dir.path, GPTConfig.from_dict(model_config))
    config = {"stage": STAGE, "parent": base, "arch": "reward", "model": model_config, "train": cfg.to_dict(),
              "data": {"spec": data, "val": val}, STAGE: {"margin": margin}}
    if lora is not None:
        config["lora"] = lora

    def build(device):
        # On resume the checkpoint brings the weights (the base run need not exist any more),
        # except for LoRA, whose checkpoint holds only the adapters and the head.
        backbone = GPT(GPTConfig.from_dict(model_config)) if resume and lora is None else GPT.from_run(base)
        if lora is not None:  # the backbone frozen with adapters; the head, outside it, trains in full
            apply_lora_section(backbone, lora)
        return RewardModel(backbone).to(device).train(), reward_loss_fn(margin)

    return train_on_pairs(run_dir, base, config, cfg, build, skip_bad_lines, resume, progress)
