"""The RL stage (`groklm ppo`): PPO or GRPO on the stage scaffold, in one process or many.

Under torchrun every process holds the policy and the reference. Each step's prompts are drawn
from (seed, step), the same on every process; each process answers its own share of them with
its own sampling seed, and learns from its own answers. DistributedDataParallel averages the
gradients of every minibatch, so the replicas stay identical; the logged statistics are the
means over all processes, and only rank 0 writes the run directory. (ppo whitens its
advantages over each process's share; with one process that is the whole batch.)

With `--set lora_rank=N` the policy trains LoRA adapters on the frozen source run, and the
reference is that same network with its adapters switched off (policy.lora_reference): no
second copy of the weights. ppo's value head trains in full beside the adapters; the
checkpoint keeps both, and the run itself (a LoRA run, as sft writes) only the adapters.
"""

from __future__ import annotations

import os
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from groklm.errors import ConfigError
from groklm.infer.scoring import token_logprobs
from groklm.model import GPT
from groklm.model.config import GPTConfig
from groklm.model.lora import apply_lora_section, save_trained_weights
from groklm.rundir import TOKENIZER_DIR, read_config
from groklm.tokenizer import load_tokenizer
from groklm.train.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from groklm.train.config import TrainConfig
from groklm.train.distributed import Distributed
from groklm.train.loop import MetricsLog, autocast, lr_at, make_optimizer, resolve_device, resolve_dtype, wrap_model
from groklm.train.plots import REWARD_KL_PLOT, plot_reward_kl
from groklm.train.rl.config import ALGOS, RLConfig, split_rl_overrides
from groklm.train.rl.objectives import kl_k3, masked_mean, policy_loss, token_entropy, value_loss
from groklm.train.rl.policy import PolicyWithValue, lora_reference
from groklm.train.rl.prompts import load_prompts
from groklm.train.rl.rewards import RewardFn, make_reward
from groklm.train.rl.rollout import Experience, collect
from groklm.train.stage import Place, open_run, resolve_lora, stage_process

# RL moves a trained model a little: a small constant learning rate, no weight decay, and a
# checkpoint every 25 rollout steps. batch_size is the minibatch (answers per optimizer step).
TRAIN_DEFAULTS = dict(lr=1e-5, min_lr=1e-5, warmup_iters=0, max_iters=200, batch_size=8,
                      weight_decay=0.0, eval_interval=25, log_interval=1)
# How config.json names a reward or prompts passed from Python (they must be passed again to resume).
FUNCTION, IN_MEMORY = "<function>", "<list>"


def train_ppo(
    source_run: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    reward: str | RewardFn = "verifier",
    prompts: str | list = "synthetic",
    algo: str | None = None,
    kl_coef: float | None = None,
    overrides: dict | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """RL-fine-tune the model of `source_run` into the run directory `out_dir`; returns its path.

    reward: "verifier", a reward-model run dir, or reward(records, completions) -> scores.
    prompts: "synthetic[:tasks]", a .jsonl path, or a list of {"prompt": [messages], ...} records.
    overrides: RLConfig / TrainConfig fields. resume: continue out_dir from its checkpoint
    (a function reward or a list of prompts must be passed again; strings are remembered)."""
    over = dict(overrides or {})
    if algo is not None:
        over["algo"] = algo
    if kl_coef is not None:
        over["kl_coef"] = kl_coef
    rl_over, train_over = split_rl_overrides(over, GPTConfig)
    run, saved = open_run(out_dir, ALGOS, resume)
    if saved:
        source_run, rl_cfg = saved["parent"], RLConfig(**{**saved["rl"], **rl_over})
        train_cfg = TrainConfig.from_dict({**saved["train"], **train_over})
        reward = saved["data"]["reward"] if isinstance(reward, str) and saved["data"]["reward"] != FUNCTION else reward
        prompts = saved["data"]["prompts"] if isinstance(prompts, str) and saved["data"]["prompts"] != IN_MEMORY else prompts
    else:
        if source_run is None:
            raise ConfigError("RL starts from a trained (SFT) run: give its directory")
        rl_cfg, train_cfg = RLConfig(**rl_over), TrainConfig.from_dict({**TRAIN_DEFAULTS, **train_over})
    source = Path(source_run)
    source_config = read_config(source)
    records = load_prompts(prompts, train_cfg.seed)
    dist = Distributed.from_env()
    per_step = min(rl_cfg.prompts_per_step, len(records))
    if per_step % dist.world_size:
        raise ConfigError(f"each step's {per_step} prompts are shared out among {dist.world_size} processes: "
                          f"set prompts_per_step to a multiple of {dist.world_size}")
    reward_fn = make_reward(reward, resolve_device(train_cfg, dist.local_rank))
    tokenizer = load_tokenizer(source / TOKENIZER_DIR)
    config = {"stage": rl_cfg.algo, "parent": source, "arch": "gpt", "model": source_config["model"],
              "train": train_cfg.to_dict(),
              "data": {"prompts": prompts if isinstance(prompts, str) else IN_MEMORY,
                       "reward": reward if isinstance(reward, str) else FUNCTION},
              "rl": asdict(rl_cfg)}
    # LoRA: the run will store adapters and a reference to the source (with its weights' hash).
    lora = resolve_lora(train_cfg, source, saved, run.path, GPTConfig.from_dict(source_config["model"]))
    if lora is not None:
        config["lora"] = lora
    with stage_process(run, config, train_cfg, resume, tokenizer=source / TOKENIZER_DIR) as place:
        policy = GPT.from_run(source)
        if lora is not None:
            # Wrapped before the value head exists: apply_lora freezes all it is given, the head trains in full.
            apply_lora_section(policy, lora)
        model = PolicyWithValue(policy, with_value=rl_cfg.algo == "ppo").to(place.device)
        if lora is not None:
            ref = lora_reference(model.policy)
        else:
            ref = GPT.from_run(source, device=place.device).requires_grad_(False)  # the frozen reference
        if place.dist.is_main:
            print(f"{rl_cfg.algo}: {model.policy.num_params():,} parameters, {len(records)} prompts, reward "
                  f"{reward if isinstance(reward, str) else 'function'}, {place.dist.world_size} process(es) on "
                  f"{place.device}", file=sys.stderr, flush=True)
        rl_steps(place, model, ref, tokenizer, records, reward_fn, rl_cfg, train_cfg, resume, progress)
    return run.path


def rl_steps(place: Place, model: PolicyWithValue, ref, tokenizer, records: list[dict], reward_fn: RewardFn,
             cfg: RLConfig, train_cfg: TrainConfig, resume: bool, progress: bool) -> None:
    """Rollout and learn, step after step, to max_iters; rank 0 logs, checkpoints and plots."""
    run, dist, device = place.run, place.dist, place.device
    dtype = resolve_dtype(train_cfg, device)
    optimizer = make_optimizer(model, train_cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    state = {"step": 0, "elapsed": 0.0}
    if resume:
        state = load_checkpoint(find_checkpoint(run.path), model, optimizer, scaler)
    _, trainer = wrap_model(model, False, dist, device)
    metrics = MetricsLog(run.metrics_path, dist.is_main, keep_until=state["step"])
    per_step = min(cfg.prompts_per_step, len(records))
    share = per_step // dist.world_size

    bar = tqdm(total=train_cfg.max_iters, initial=state["step"], unit="step", disable=not (progress and dist.is_main),
               dynamic_ncols=True)
    start = time.perf_counter() - state["elapsed"]
    for step in range(state["step"], train_cfg.max_iters):
        # Prompts, samples and minibatch order are functions of (seed, step): a resumed run
        # continues exactly as the uninterrupted one would have.
        rng = random.Random(f"{train_cfg.seed}/{step}")
        chosen = rng.sample(records, per_step)[dist.rank * share : (dist.rank + 1) * share]
        sampler = torch.Generator(device=device).manual_seed(rng.getrandbits(62) + dist.rank)  # its own answers
        shuffler = torch.Generator().manual_seed(rng.getrandbits(62))
        lr = lr_at(step, train_cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        experience = collect(model, ref, tokenizer, chosen, reward_fn, cfg, sampler)
        losses = learn(trainer, optimizer, scaler, experience, cfg, train_cfg, dtype, shuffler)
        done = step + 1
        record = {"step": done, **mean_over_processes({**experience.stats, **losses}, dist, device), "lr": lr,
                  "elapsed": time.perf_counter() - start}
        if done % train_cfg.log_interval == 0 or done == train_cfg.max_iters:
            metrics.write(record)
        bar.set_postfix(score=f"{record['score']:.3f}", kl=f"{record['kl']:.3f}", refresh=False)
        bar.update(done - bar.n)
        if (done % train_cfg.eval_interval == 0 or done == train_cfg.max_iters) and dist.is_main:
            save_checkpoint(run.path, model, optimizer, scaler, {"step": done, "elapsed": record["elapsed"]})
            save_trained_weights(model.policy, run.path)  # a plain GPT run (or its adapters): no value head
    bar.close()
    if dist.is_main:
        save_trained_weights(model.policy, run.path)
        plot_reward_kl(run.metrics_path, run.path / REWARD_KL_PLOT, title=f"{cfg.algo} {run.path.name}")


def learn(trainer, optimizer, scaler, experience: Experience, cfg: RLConfig, train_cfg: TrainConfig, dtype,
          generator) -> dict[str, float]:
    """ppo_epochs passes of shuffled minibatches over one rollout; returns the mean losses.

    trainer: the policy (DDP-wrapped under torchrun, which averages each minibatch's gradients)."""
    device = experience.sequences.device
    totals: dict[str, float] = {}
    n, updates = experience.sequences.size(0), 0
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, train_cfg.batch_size):
            i = order[start : start + train_cfg.batch_size].to(device)
            seqs, mask = experience.sequences[i], experience.mask[i]
            with autocast(device, dtype):
                logits, values = trainer(seqs)
            logp = token_logprobs(logits / cfg.temperature, seqs)
            pg, clip_frac = policy_loss(logp, experience.old_logp[i], experience.advantages[i], mask, cfg.clip_eps)
            stats = {"policy_loss": pg, "clip_frac": clip_frac}
            if cfg.algo == "ppo":
                stats["value_loss"] = value_loss(values[:, :-1], experience.old_values[i], experience.returns[i], mask,
                                                 cfg.value_clip)
                loss = pg + cfg.vf_coef * stats["value_loss"]
            else:
                stats["kl_loss"] = masked_mean(kl_k3(logp, experience.ref_logp[i]), mask)
                loss = pg + cfg.kl_coef * stats["kl_loss"]
            scaler.scale(loss).backward()
            if train_cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(trainer.parameters(), train_cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                stats["entropy"] = masked_mean(token_entropy(logits), mask)
            for name, value in stats.items():
                totals[name] = totals.get(name, 0.0) + value.item()
            updates += 1
    return {name: total / updates for name, total in totals.items()}


def mean_over_processes(stats: dict[str, float], dist: Distributed, device: torch.device) -> dict[str, float]:
    """Each statistic averaged over the processes (every process holds the same keys)."""
    if not dist.enabled:
        return stats
    totals = dist.sum(torch.tensor(list(stats.values()), dtype=torch.float64, device=device))
    return {name: value / dist.world_size for name, value in zip(stats, totals.tolist())}
