"""RLHF: improve a chat model by letting it answer prompts and rewarding the good answers.

    SFT run ──► policy (trained) + reference (frozen copy) ──► RUN (a normal GPT run, "stage": "ppo")

One step (InstructGPT's recipe):
  1. rollout: the policy answers a batch of prompts (temperature 1, up to max_new_tokens,
     stopping at <|im_end|>);
  2. score:   a reward model or a task's verifier grades each whole answer with one number;
  3. learn:   a few epochs of minibatches of the clipped PPO objective on those answers.

Two ways to turn scores into per-token advantages:

  ppo   a value head V(s_t) (one Linear on the policy's hidden states) and GAE. Each token
        is an action; its reward is a KL penalty, and the last token also gets the score:
            r_t = -kl_coef * (log pi(a_t|s_t) - log pi_ref(a_t|s_t))   (+ score at the end)
            delta_t = r_t + gamma V(s_t+1) - V(s_t);   A_t = delta_t + gamma lam A_t+1
        The value head is trained towards the returns A_t + V(s_t) with a clipped loss.
  grpo  (DeepSeekMath) no value head: G answers to each prompt, and every token of an answer
        gets the answer's score relative to its group: A = (score - mean_G) / (std_G + eps).
        The KL to the reference is a loss term instead of a reward, with the k3 estimator
            kl_t = exp(ref - logp) - (ref - logp) - 1   (>= 0, unbiased, low variance).

Both then minimise the clipped surrogate, which stops one batch from moving the policy far:
    ratio = pi(a|s) / pi_old(a|s);   L = -min(ratio A, clip(ratio, 1-eps, 1+eps) A)

Why the KL term: the reward model (or verifier) is only right near the answers it was built
for; without a leash to the reference the policy drifts to text that games the score.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from groklm.errors import ConfigError, DataError
from groklm.rundir import CONFIG_FILE, CHECKPOINT_DIR, METRICS_FILE, TOKENIZER_DIR, WEIGHTS_FILE, read_config, save_weights, write_json
from groklm.train.config import TrainConfig, add_training_arguments, parse_value, split_overrides
from groklm.train.rollout import masked_mean, pack, sample_responses, token_entropy, token_logprobs

ALGOS = ("ppo", "grpo")
PLOT_FILE = "reward_kl.png"
# RL moves a trained model a little: a small constant learning rate, no weight decay, and a
# checkpoint every 25 rollout steps. batch_size is the minibatch (answers per optimizer step).
TRAIN_DEFAULTS = dict(lr=1e-5, min_lr=1e-5, warmup_iters=0, max_iters=200, batch_size=8,
                      weight_decay=0.0, eval_interval=25, log_interval=1)

# reward(records, completions) -> one score per completion
RewardFn = Callable[[list[dict], list[str]], list[float]]


@dataclass
class RLConfig:
    algo: str = "ppo"  # ppo | grpo
    prompts_per_step: int = 16  # prompts answered per rollout
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


def split_rl_overrides(overrides: dict) -> tuple[dict, dict]:
    """--set key=value pairs -> (RLConfig values, TrainConfig values); the model's shape is fixed."""
    rl_fields = {f.name: f for f in fields(RLConfig)}
    rl = {k: parse_value(k, v, rl_fields[k].type) for k, v in overrides.items() if k in rl_fields}
    model, train = split_overrides({k: v for k, v in overrides.items() if k not in rl_fields})
    if model:
        raise ConfigError(f"RL fine-tunes an existing model; its shape is fixed (cannot set {sorted(model)})")
    return rl, train


# ---- the model: policy + value head ---------------------------------------------------------


class PolicyWithValue(nn.Module):
    """The GPT policy, plus (for ppo) a value head reading the same hidden states.

    Sharing the trunk is cheap and lets the value head reuse what the policy knows; InstructGPT
    used a separate value model, which costs a second network."""

    def __init__(self, policy: nn.Module, with_value: bool = True):
        super().__init__()
        self.policy = policy
        self.value_head = nn.Linear(policy.config.n_embd, 1) if with_value else None
        if self.value_head is not None:  # start by predicting 0: no false confidence
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)

    @property
    def config(self):
        return self.policy.config

    def forward(self, idx: torch.Tensor):
        """idx (N, T) -> (logits (N, T, V), values (N, T) or None)."""
        hidden = self.policy.hidden_states(idx)
        values = self.value_head(hidden).squeeze(-1).float() if self.value_head is not None else None
        return self.policy.lm_head(hidden), values


# ---- the math -------------------------------------------------------------------------------


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalized advantage estimation over (N, T) per-token rewards and values.

    Outside the mask, rewards and values are zero, so the state after the last response token
    is worth 0 (the episode ended) and padding contributes nothing. Returns (advantages, returns)."""
    mask = mask.to(rewards.dtype)
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    T = rewards.size(1)
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    return advantages * mask, (advantages + values) * mask


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalise to mean 0, std 1 over the masked entries (keeps the step size independent of the reward's scale)."""
    mean = masked_mean(x, mask)
    std = masked_mean((x - mean) ** 2, mask).sqrt()
    return (x - mean) / (std + eps) * mask


def policy_loss(logp, old_logp, advantages, mask, clip_eps: float):
    """The clipped surrogate: mean over response tokens of max(-ratio A, -clip(ratio) A).
    Returns (loss, clip fraction: the share of tokens where the clipped term was the larger)."""
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_eps, 1 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    return loss, masked_mean((clipped > unclipped).float(), mask)


def value_loss(values, old_values, returns, mask, clip: float):
    """0.5 (V - R)^2, pessimistically clipped like the policy: the new value may not profit from
    moving more than `clip` away from the value at rollout time."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi || pi_ref) estimate from a sample of pi: r - log r - 1 with r = pi_ref / pi."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1


def group_advantages(scores: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """GRPO: scores (N,) in consecutive groups of group_size -> (score - group mean) / (group std + eps)."""
    groups = scores.view(-1, group_size)
    mean, std = groups.mean(dim=1, keepdim=True), groups.std(dim=1, keepdim=True)
    return ((groups - mean) / (std + eps)).reshape(-1)


# ---- prompts and rewards --------------------------------------------------------------------


def load_prompts(spec, seed: int = 0) -> list[dict]:
    """`synthetic`, `synthetic:task1,task2`, a .jsonl of {"prompt": [messages], ...}, or a list of records."""
    from groklm.tokenizer.chat import check_messages

    if isinstance(spec, list):
        records = spec
    elif str(spec).split(":")[0] == "synthetic":
        from groklm.data.synthetic import make_rl_prompts

        names = str(spec).partition(":")[2]
        records = make_rl_prompts(names.split(",") if names else None, split="train", seed=seed)
    else:
        path = Path(spec)
        if not path.is_file():
            raise DataError(f"prompts file {path} does not exist (or use --prompts synthetic[:TASKS])")
        records = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise DataError(f"{path}:{n}: not valid JSON ({error})") from None
    if not records:
        raise DataError("no prompts to learn from")
    for n, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(f"prompt record {n} is not an object with a 'prompt' message list")
        check_messages(record.get("prompt"), where=f"prompt record {n}")
    return records


def make_reward(spec, device: torch.device) -> RewardFn:
    """`verifier` (the synthetic tasks' checkers), a reward-model run directory, or a function."""
    if callable(spec):
        return spec
    if spec == "verifier":
        from groklm.data.synthetic import verify

        return lambda records, texts: [verify(r, t) for r, t in zip(records, texts)]
    from groklm.train.reward import RewardModel

    model = RewardModel.from_run(spec, device=device)

    def score(records, texts):
        conversations = [[*r["prompt"], {"role": "assistant", "content": t}] for r, t in zip(records, texts)]
        return model.score(conversations).float().view(-1).tolist()

    return score


# ---- one RL step ----------------------------------------------------------------------------


@dataclass
class Batch:
    """One rollout, ready to learn from (all per-token tensors are (N, T-1))."""

    sequences: torch.Tensor
    mask: torch.Tensor
    old_logp: torch.Tensor
    ref_logp: torch.Tensor
    advantages: torch.Tensor
    old_values: torch.Tensor | None
    returns: torch.Tensor | None
    stats: dict


@torch.no_grad()
def collect(model: PolicyWithValue, ref, tokenizer, records, reward_fn: RewardFn, cfg: RLConfig, generator) -> Batch:
    """Rollout + scoring + advantages for one step."""
    from groklm.tokenizer.chat import render_prompt, stop_ids

    stop = stop_ids(tokenizer)
    device = next(model.parameters()).device
    model.eval()
    G = cfg.answers_per_prompt
    prompts, graded = [], []
    keep = max(1, model.config.block_size - cfg.max_new_tokens)  # the context the sampler sees, and training too
    for record in records:
        prompts += [render_prompt(tokenizer, record["prompt"])[-keep:]] * G
        graded += [record] * G
    responses = sample_responses(model.policy, tokenizer, prompts, cfg.max_new_tokens, cfg.temperature, generator=generator)
    rollout = pack(prompts, responses, model.config.block_size)
    # (ids past the tokenizer's vocabulary are rows of a padded embedding: no text)
    texts = [tokenizer.decode([t for t in r if t not in stop and t < tokenizer.vocab_size]) for r in responses]
    scores = torch.tensor(reward_fn(graded, texts), dtype=torch.float32, device=device).view(-1)
    seqs, mask = rollout.sequences.to(device), rollout.mask.to(device)

    logits, values = model(seqs)
    old_logp = token_logprobs(logits / cfg.temperature, seqs)
    ref_logp = token_logprobs(ref(seqs)[0] / cfg.temperature, seqs)
    kl = (old_logp - ref_logp) * mask  # log pi/pi_ref of each sampled token: summed, the sequence's KL
    stats = {"score": scores.mean().item(), "kl": kl.sum(dim=1).mean().item(),
             "response_len": mask.sum(dim=1).float().mean().item()}
    if cfg.algo == "ppo":
        rewards = -cfg.kl_coef * kl
        last = (mask * torch.arange(mask.size(1), device=device)).argmax(dim=1)  # each answer's last token
        rewards[torch.arange(len(scores), device=device), last] += scores
        old_values = values[:, :-1] * mask
        advantages, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
        advantages = whiten(advantages, mask)
    else:
        advantages = group_advantages(scores, G)[:, None] * mask
        old_values = returns = None
    model.train()
    return Batch(seqs, mask, old_logp, ref_logp, advantages, old_values, returns, stats)


def learn(model: PolicyWithValue, optimizer, scaler, batch: Batch, cfg: RLConfig, train_cfg: TrainConfig, dtype, generator) -> dict:
    """ppo_epochs passes of shuffled minibatches over one rollout; returns the mean losses."""
    from groklm.train.loop import autocast

    device = batch.sequences.device
    totals: dict[str, float] = {}
    n, updates = batch.sequences.size(0), 0
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, train_cfg.batch_size):
            i = order[start : start + train_cfg.batch_size].to(device)
            seqs, mask = batch.sequences[i], batch.mask[i]
            with autocast(device, dtype):
                logits, values = model(seqs)
            logp = token_logprobs(logits / cfg.temperature, seqs)
            pg, clip_frac = policy_loss(logp, batch.old_logp[i], batch.advantages[i], mask, cfg.clip_eps)
            stats = {"policy_loss": pg, "clip_frac": clip_frac}
            if cfg.algo == "ppo":
                stats["value_loss"] = value_loss(values[:, :-1], batch.old_values[i], batch.returns[i], mask, cfg.value_clip)
                loss = pg + cfg.vf_coef * stats["value_loss"]
            else:
                stats["kl_loss"] = masked_mean(kl_k3(logp, batch.ref_logp[i]), mask)
                loss = pg + cfg.kl_coef * stats["kl_loss"]
            scaler.scale(loss).backward()
            if train_cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                stats["entropy"] = masked_mean(token_entropy(logits), mask)
            for name, value in stats.items():
                totals[name] = totals.get(name, 0.0) + value.item()
            updates += 1
    return {name: total / updates for name, total in totals.items()}


# ---- the stage ------------------------------------------------------------------------------


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
    from tqdm import tqdm

    from groklm.model import GPT
    from groklm.tokenizer import load_tokenizer
    from groklm.train.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
    from groklm.train.loop import MetricsLog, lr_at, make_optimizer, resolve_device, resolve_dtype
    from groklm.train.pretrain import seed_everything

    out = Path(out_dir)
    over = dict(overrides or {})
    if algo is not None:
        over["algo"] = algo
    if kl_coef is not None:
        over["kl_coef"] = kl_coef
    rl_over, train_over = split_rl_overrides(over)
    if resume:
        saved = read_config(out)
        source_run, rl_cfg = saved["source"], RLConfig(**{**saved["rl"], **rl_over})
        train_cfg = TrainConfig.from_dict({**saved["train"], **train_over})
        reward = saved["reward"] if isinstance(reward, str) and saved["reward"] != "<function>" else reward
        prompts = saved["prompts"] if isinstance(prompts, str) and saved["prompts"] != "<list>" else prompts
    else:
        if source_run is None:
            raise ConfigError("RL starts from a trained (SFT) run: give its directory")
        if (out / CONFIG_FILE).exists() or (out / CHECKPOINT_DIR).exists():
            raise ConfigError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
        rl_cfg, train_cfg = RLConfig(**rl_over), TrainConfig.from_dict({**TRAIN_DEFAULTS, **train_over})
    source = Path(source_run)
    source_config = read_config(source)
    records = load_prompts(prompts, train_cfg.seed)
    device = resolve_device(train_cfg)
    dtype = resolve_dtype(train_cfg, device)
    reward_fn = make_reward(reward, device)
    tokenizer = load_tokenizer(source / TOKENIZER_DIR)

    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / CONFIG_FILE, {
            "model": source_config["model"], "train": train_cfg.to_dict(), "rl": asdict(rl_cfg),
            "stage": rl_cfg.algo, "arch": "gpt", "source": str(source.resolve()),
            "reward": reward if isinstance(reward, str) else "<function>",
            "prompts": prompts if isinstance(prompts, str) else "<list>",
        })
        shutil.copytree(source / TOKENIZER_DIR, out / TOKENIZER_DIR, dirs_exist_ok=True)

    seed_everything(train_cfg.seed)
    model = PolicyWithValue(GPT.from_run(source), with_value=rl_cfg.algo == "ppo").to(device)
    ref = GPT.from_run(source, device=device).requires_grad_(False)  # the frozen reference
    optimizer = make_optimizer(model, train_cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    state = {"step": 0, "elapsed": 0.0}
    if resume:
        state = load_checkpoint(find_checkpoint(out), model, optimizer, scaler)
    metrics = MetricsLog(out / METRICS_FILE, True, keep_until=state["step"])
    print(f"{rl_cfg.algo}: {model.policy.num_params():,} parameters, {len(records)} prompts, reward "
          f"{reward if isinstance(reward, str) else 'function'}, on {device}", file=sys.stderr, flush=True)

    bar = tqdm(total=train_cfg.max_iters, initial=state["step"], unit="step", disable=not progress, dynamic_ncols=True)
    start = time.perf_counter() - state["elapsed"]
    for step in range(state["step"], train_cfg.max_iters):
        # Prompts, samples and minibatch order are functions of (seed, step): a resumed run
        # continues exactly as the uninterrupted one would have.
        rng = random.Random(f"{train_cfg.seed}/{step}")
        chosen = rng.sample(records, min(rl_cfg.prompts_per_step, len(records)))
        sampler = torch.Generator(device=device).manual_seed(rng.getrandbits(62))
        shuffler = torch.Generator().manual_seed(rng.getrandbits(62))
        lr = lr_at(step, train_cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = collect(model, ref, tokenizer, chosen, reward_fn, rl_cfg, sampler)
        losses = learn(model, optimizer, scaler, batch, rl_cfg, train_cfg, dtype, shuffler)
        done = step + 1
        record = {"step": done, **batch.stats, **losses, "lr": lr, "elapsed": time.perf_counter() - start}
        if done % train_cfg.log_interval == 0 or done == train_cfg.max_iters:
            metrics.write(record)
        bar.set_postfix(score=f"{record['score']:.3f}", kl=f"{record['kl']:.3f}", refresh=False)
        bar.update(done - bar.n)
        if done % train_cfg.eval_interval == 0 or done == train_cfg.max_iters:
            save_checkpoint(out, model, optimizer, scaler, {"step": done, "elapsed": record["elapsed"]})
            save_weights(model.policy, out / WEIGHTS_FILE)  # the run is a plain GPT run
    bar.close()
    save_weights(model.policy, out / WEIGHTS_FILE)
    plot_reward_kl(out / METRICS_FILE, out / PLOT_FILE, title=f"{rl_cfg.algo} {out.name}")
    return out


def plot_reward_kl(metrics_path: Path, png_path: Path, title: str = "") -> Path:
    """Mean score and KL to the reference per step, one above the other: the score should rise
    while the KL stays moderate (a KL that runs away means the policy is gaming the reward)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from groklm.rundir import atomic_path
    from groklm.train.plots import read_metrics

    records = read_metrics(Path(metrics_path))
    steps = [r["step"] for r in records]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), dpi=100, sharex=True)
    top.plot(steps, [r["score"] for r in records], linewidth=1)
    top.set_ylabel("reward (mean score)")
    top.set_title(title or "RL")
    bottom.plot(steps, [r["kl"] for r in records], color="tab:red", linewidth=1)
    bottom.set_ylabel("KL to reference (nats)")
    bottom.set_xlabel("step")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(png_path)


# ---- the command ----------------------------------------------------------------------------


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "ppo",
        help="RLHF: improve a chat model with PPO or GRPO against a reward model or verifier",
        description="Fine-tune RUN with reinforcement learning: sample answers to prompts, score them "
        "(a reward model run, or the synthetic tasks' verifiers), and update with the clipped PPO "
        "objective plus a KL penalty to RUN. Writes a normal GPT run (stage ppo/grpo). Any RLConfig "
        "or TrainConfig field can be set with --set key=value (e.g. max_iters, lr, prompts_per_step, "
        "group_size, max_new_tokens, ppo_epochs, clip_eps, gamma, lam).",
    )
    parser.add_argument("run", nargs="?", metavar="RUN", help="the run to start from (an SFT model; optional with --resume)")
    parser.add_argument("--reward", default="verifier", metavar="RM_DIR|verifier", help="reward model run, or 'verifier' (default)")
    parser.add_argument("--prompts", default="synthetic", metavar="SPEC", help="synthetic[:task,task] (default synthetic) or FILE.jsonl")
    parser.add_argument("--out", required=True, metavar="RUN", help="run directory to write")
    parser.add_argument("--algo", choices=ALGOS, help="ppo (value head + GAE, default) or grpo (group-relative, no value head)")
    parser.add_argument("--kl-coef", type=float, metavar="BETA", help="weight of the KL to RUN (default 0.05)")
    add_training_arguments(parser, "override an RL or training setting, e.g. --set max_iters=100 kl_coef=0.1")
    parser.set_defaults(func=run_ppo)


def run_ppo(args) -> None:
    from groklm.train.config import parse_set_args
    from groklm.train.plots import read_metrics

    run = train_ppo(args.run, args.out, args.reward, args.prompts, args.algo, args.kl_coef,
                    parse_set_args(args.overrides), resume=args.resume, progress=not args.no_progress)
    records = read_metrics(run / METRICS_FILE)
    if records:
        last = records[-1]
        print(f"{run}: step {last['step']}, reward {last['score']:.3f}, kl {last['kl']:.3f}, {last['elapsed']:.0f}s")
