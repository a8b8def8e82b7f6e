"""The training loop every stage shares: optimizer, schedule, precision, accumulation, logging.

One optimizer step:
  for each of this process's micro-batches:  loss = loss_fn(model, batch); (loss / n).backward()
  clip the gradient norm; optimizer step with this step's learning rate; zero the gradients.
The optimizer is AdamW, or Muon for the hidden matrices with AdamW for the rest (optimizer=muon).
Gradient accumulation makes a big batch out of several small ones that fit in memory; with
several processes DDP averages the gradients of their micro-batches, so the step is the same
as one process running them all. Batches come from a function of the step number, which is
what makes a resumed run (or a run on N processes) reproduce an uninterrupted one.

Stages differ only in their batches and their loss: pretraining and SFT predict next tokens,
a reward model compares two answers, DPO compares policy and reference log-probabilities.
Each passes its `loss_fn(model, batch) -> (loss, stats)`; stats (detached scalars such as
accuracy or margins) are averaged like the loss and logged to metrics.jsonl beside it.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn as nn
from tqdm import tqdm

from groklm.errors import ConfigError, DataError
from groklm.jsonl import read_jsonl, write_jsonl
from groklm.model.gpt import set_grad_checkpoint
from groklm.model.lora import is_lora_key, save_trained_weights
from groklm.rundir import METRICS_FILE
from groklm.train.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from groklm.train.config import TrainConfig
from groklm.train.distributed import Distributed
from groklm.train.plots import LOSS_PLOT, plot_loss

# A batch is a tuple of tensors whose meaning only the stage's loss_fn knows (for next-token
# prediction: inputs, targets and optionally packed document ids).
Batch = tuple[torch.Tensor, ...]
# batches(step, micro_indices) yields one batch per index; val_batch(i) is the i-th val batch.
Batches = Callable[[int, range], Iterator[Batch]]
ValBatch = Callable[[int], Batch]
LossFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def language_model_loss(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss_fn of language modelling: the model's own next-token loss on batch = (inputs,
    targets[, doc_ids])."""
    _, loss = model(*batch)
    return loss, {}


# ---- device and precision -------------------------------------------------------------------


def resolve_device(cfg: TrainConfig, local_rank: int = 0) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but this machine has no CUDA GPU torch can use; use device=cpu or auto")
    if cfg.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    torch.cuda.set_device(local_rank)
    torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores: ~free speed
    torch.backends.cudnn.allow_tf32 = True
    return torch.device("cuda", local_rank)


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX dot products). Without
    them PyTorch emulates bf16 and mixed precision is slower than float32, not faster."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype:
    """Mixed precision: bf16 where the GPU has it (no loss scaling needed), fp16 on older GPUs;
    on a CPU, bf16 where it has native bf16 dot products, else float32.

    On such a CPU bf16 matmuls take about 0.6x the time of float32 ones (the shakespeare-char
    step: about 38 -> 32 ms on 2 cores, docs/performance.md); weights, gradients and AdamW's
    state stay float32, as on a GPU, so only the matmuls' inputs are rounded."""
    if cfg.dtype == "auto":
        if device.type != "cuda":
            return torch.bfloat16 if cpu_has_bf16() else torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if cfg.dtype == "float16" and device.type != "cuda":
        raise ConfigError("dtype=float16 needs a CUDA GPU; on CPU use float32 or bfloat16")
    return getattr(torch, cfg.dtype)


def autocast(device: torch.device, dtype: torch.dtype):
    """Matmuls in `dtype`, weights and optimizer state kept in fp32."""
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# ---- optimizer and schedule -----------------------------------------------------------------


def embedding_weights(model: nn.Module) -> set[int]:
    """ids of the model's embedding tables (a tied LM head shares its table's id)."""
    return {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}


def param_groups(model: nn.Module, weight_decay: float, leave_out: frozenset[int] = frozenset()) -> list[dict]:
    """AdamW's groups: weight decay for matrices only, not for biases, norm gains or embedding
    tables. leave_out: ids of parameters another optimizer trains.

    Decay pulls weights towards zero; that regularizes the matrices that mix features, but on
    a gain or a bias it only fights the scale the model needs, and on an embedding table it
    shrinks rare tokens' rows (rarely updated) more than common ones. named_parameters() yields
    a tied weight once, so the shared embedding / LM head matrix is counted once.
    """
    embeddings = embedding_weights(model)
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad and id(p) not in leave_out:
            (decay if p.dim() >= 2 and id(p) not in embeddings else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# The model classes' output layers (GPT and RNN lm_head, the reward, value and classifier heads,
# seq2seq's vocabulary projection): Muon is for hidden matrices, not for these.
OUTPUT_LAYERS = ("lm_head", "head", "value_head", "out")


def muon_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters Muon takes: the weight matrices of hidden layers, each once.

    Left to AdamW: embedding tables (a tied LM head with them), output layers, norms and biases
    (not 2-D), single-row or single-column matrices (a vector: orthogonalizing its update only
    normalizes it), and LoRA adapters. Muon's orthogonalized update is steepest descent for a
    whole weight matrix; LoRA trains the factors B and A of a low-rank change instead, and
    orthogonalizing each factor's update apart gives every singular direction the same step
    whatever the other factor holds (B starts at zero), which is not a step on their product.
    AdamW is what LoRA is tuned with, so a LoRA run trains with AdamW alone.
    """
    embeddings = embedding_weights(model)
    heads = {id(p) for name, m in model.named_modules() if name.rpartition(".")[2] in OUTPUT_LAYERS
             for p in m.parameters(recurse=False)}
    return [p for name, p in model.named_parameters()
            if p.requires_grad and p.dim() == 2 and min(p.shape) > 1 and not is_lora_key(name)
            and id(p) not in embeddings and id(p) not in heads]


class MuonWithAdamW:
    """Muon for the hidden matrices and AdamW for the rest, driven as one optimizer.

    param_groups lists both optimizers' groups, so whatever sets a step's learning rate on every
    group (the loop, PPO), unscales gradients (GradScaler) or clips them works unchanged. That
    rate is AdamW's; Muon's groups step at it times muon_lr / lr, so one schedule drives both
    and Muon's peak is muon_lr. state_dict holds both optimizers' states under their names.
    """

    def __init__(self, adamw: torch.optim.AdamW, muon: torch.optim.Muon, muon_lr_ratio: float):
        self.adamw, self.muon, self.muon_lr_ratio = adamw, muon, muon_lr_ratio

    @property
    def param_groups(self) -> list[dict]:
        # Looked up each time: load_state_dict replaces an optimizer's group dicts with new ones.
        return self.adamw.param_groups + self.muon.param_groups

    def step(self) -> None:
        self.adamw.step()
        scheduled = [group["lr"] for group in self.muon.param_groups]
        for group, lr in zip(self.muon.param_groups, scheduled):
            group["lr"] = lr * self.muon_lr_ratio
        self.muon.step()
        for group, lr in zip(self.muon.param_groups, scheduled):  # the exact value back, no rounding drift
            group["lr"] = lr

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adamw.zero_grad(set_to_none=set_to_none)
        self.muon.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"adamw": self.adamw.state_dict(), "muon": self.muon.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.adamw.load_state_dict(state["adamw"])
        self.muon.load_state_dict(state["muon"])


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW | MuonWithAdamW:
    """AdamW on every trainable parameter, or (optimizer=muon) Muon on the hidden matrices and
    AdamW on the rest; a model with no matrix for Muon (a LoRA run) gets AdamW alone."""
    matrices = muon_matrices(model) if cfg.optimizer == "muon" else []
    # The fused kernel does the whole update in one pass per group instead of one pass per
    # operation of the update (a launch each on a GPU, a sweep through memory each on a CPU).
    adamw = torch.optim.AdamW(param_groups(model, cfg.weight_decay, frozenset(map(id, matrices))), lr=cfg.lr,
                              betas=(cfg.beta1, cfg.beta2), fused=device.type in ("cuda", "cpu"))
    if not matrices:
        return adamw
    ratio = cfg.muon_lr / cfg.lr
    # Muon's decay is lr * weight_decay * w like AdamW's, but at its own, larger lr; dividing by
    # the ratio makes a matrix shrink by the same factor a step under either optimizer.
    muon = torch.optim.Muon(matrices, lr=cfg.lr, weight_decay=cfg.weight_decay / ratio, momentum=cfg.muon_momentum)
    return MuonWithAdamW(adamw, muon, ratio)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to lr, then a cosine down to min_lr at lr_decay_iters, then flat."""
    if step < cfg.warmup_iters:
        return cfg.lr * (step + 1) / cfg.warmup_iters
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    if step >= decay_iters:
        return cfg.min_lr
    progress = (step - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


# ---- the loop -------------------------------------------------------------------------------


@dataclass
class Setup:
    """What the loop needs besides the config: built by a stage (pretrain, sft, ...)."""

    model: nn.Module  # the plain model: its weights are what gets saved
    batches: Batches
    val_batch: ValBatch
    tokens_per_micro: int  # tokens in one micro-batch, for tokens/s
    run_dir: Path
    dist: Distributed
    device: torch.device
    loss_fn: LossFn = language_model_loss


def micro_range(cfg: TrainConfig, dist: Distributed) -> range:
    """This process's share of the step's grad_accum micro-batches (all of them under sequence
    parallelism, each process taking its slice of every sequence)."""
    if cfg.sequence_parallel != dist.sequence_parallel:
        raise ConfigError("sequence_parallel works in GPT pretraining only (groklm pretrain): leave it out here")
    if cfg.grad_accum % dist.data_world:
        raise ConfigError(
            f"grad_accum={cfg.grad_accum} must be a multiple of the number of processes ({dist.world_size}); "
            "each process runs grad_accum / processes micro-batches of batch_size"
        )
    share = cfg.grad_accum // dist.data_world
    return range(dist.data_rank * share, (dist.data_rank + 1) * share)


def train(cfg: TrainConfig, s: Setup, resume: bool = False, progress: bool = True) -> dict:
    """Run (or continue) training to cfg.max_iters; returns the last metrics record."""
    micros = micro_range(cfg, s.dist)
    dtype = resolve_dtype(cfg, s.device)
    optimizer = make_optimizer(s.model, cfg, s.device)
    scaler = torch.amp.GradScaler(s.device.type, enabled=dtype == torch.float16)
    state = {"step": 0, "elapsed": 0.0}
    if resume:
        state = load_checkpoint(find_checkpoint(s.run_dir), s.model, optimizer, scaler)
    metrics = MetricsLog(s.run_dir / METRICS_FILE, s.dist.is_main, keep_until=state["step"])

    if cfg.grad_checkpoint:  # before compiling, so the compiled graph includes the recomputation
        set_grad_checkpoint(s.model)
    model, ddp = wrap_model(s.model, cfg.compile, s.dist, s.device)
    tokens_per_step = s.tokens_per_micro * cfg.grad_accum
    bar = tqdm(total=cfg.max_iters, initial=state["step"], unit="step", disable=not (progress and s.dist.is_main), dynamic_ncols=True)
    record: dict = {}
    # elapsed: wall time of the whole run (across resumes); the tokens/s window skips eval time.
    start, clock, last_step = time.perf_counter() - state["elapsed"], time.perf_counter(), state["step"]
    for step in range(state["step"], cfg.max_iters):
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, stats = train_step(ddp, optimizer, scaler, s.batches(step, micros), len(micros), s, dtype, cfg.grad_clip)
        done = step + 1
        is_eval = done % cfg.eval_interval == 0 or done == cfg.max_iters
        if not (is_eval or done % cfg.log_interval == 0):
            continue
        # Logging forces a GPU sync (.item()), so it happens only every log_interval steps.
        # Under sequence parallelism each process's loss is the mean over its slice of the
        # sequences, the slices equal in size: their mean is the loss of the whole sequences.
        counted = cfg.grad_accum * s.dist.sequence_shards
        loss = s.dist.sum(loss).item() / counted
        now = time.perf_counter()
        record = {"step": done, "loss": loss, "lr": lr,
                  "tokens_per_sec": tokens_per_step * (done - last_step) / max(now - clock, 1e-9),
                  "elapsed": now - start}
        record.update({name: s.dist.sum(value).item() / counted for name, value in stats.items()})
        if is_eval:
            record.update(evaluate(model, s.val_batch, cfg.eval_iters, s, dtype))
        metrics.write(record)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{record['tokens_per_sec']:,.0f}", refresh=False)
        bar.update(done - bar.n)
        if is_eval and s.dist.is_main:
            # The data position is the step: batches are a function of (seed, step).
            state = {"step": done, "elapsed": time.perf_counter() - start, "data": {"next_step": done}}
            save_checkpoint(s.run_dir, s.model, optimizer, scaler, state)
            save_trained_weights(s.model, s.run_dir)
        clock, last_step = time.perf_counter(), done
    bar.close()
    return record


def train_and_save(cfg: TrainConfig, s: Setup, title: str, resume: bool = False, progress: bool = True) -> dict:
    """`train`, then (on the main process) the final weights and the loss plot into the run dir:
    what every stage built on this loop does last."""
    record = train(cfg, s, resume=resume, progress=progress)
    if s.dist.is_main:
        save_trained_weights(s.model, s.run_dir)
        plot_loss(s.run_dir / METRICS_FILE, s.run_dir / LOSS_PLOT, title=title)
    return record


def wrap_model(model: nn.Module, compile: bool, dist: Distributed, device: torch.device):
    """(the model to evaluate, the model to train): compiled if asked, and DDP-wrapped for training
    when there are several processes. All share the same parameters as `model`."""
    compiled = torch.compile(model) if compile else model
    if not dist.enabled:
        return compiled, compiled
    device_ids = [device.index] if device.type == "cuda" else None
    return compiled, torch.nn.parallel.DistributedDataParallel(compiled, device_ids=device_ids)


def train_step(model, optimizer, scaler, batches, n_micro: int, s: Setup, dtype, grad_clip: float):
    """One optimizer step over this process's micro-batches; returns the summed micro losses
    and the summed stats of the loss function."""
    total = torch.zeros((), device=s.device)
    stats: dict[str, torch.Tensor] = {}
    for i, batch in enumerate(batches):
        batch = tuple(to_device(t, s.device) for t in batch)
        # DDP all-reduces gradients on every backward unless told not to; only the last
        # micro-batch needs it, the earlier ones just accumulate locally.
        last = i == n_micro - 1
        with (nullcontext() if last or not s.dist.enabled else model.no_sync()):
            with autocast(s.device, dtype):
                loss, micro_stats = s.loss_fn(model, batch)
            scaler.scale(loss / n_micro).backward()
        total += loss.detach().float()
        add_stats(stats, micro_stats)
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return total, stats


def add_stats(into: dict[str, torch.Tensor], stats: dict[str, torch.Tensor]) -> None:
    for name, value in stats.items():
        into[name] = into.get(name, 0) + value.detach().float()


@torch.no_grad()
def evaluate(model, val_batch: ValBatch, eval_iters: int, s: Setup, dtype) -> dict[str, float]:
    """Mean loss (and stats) over the same eval_iters validation batches every time, so evals
    are comparable across steps: {"val_loss": ..., "val_<stat>": ...}."""
    model.eval()
    totals: dict[str, torch.Tensor] = {"loss": torch.zeros((), device=s.device)}
    for i in range(s.dist.data_rank, eval_iters, s.dist.data_world):
        batch = tuple(to_device(t, s.device) for t in val_batch(i))
        with autocast(s.device, dtype):
            loss, stats = s.loss_fn(model, batch)
        add_stats(totals, {"loss": loss, **stats})
    model.train()
    return {f"val_{name}": s.dist.sum(value).item() / (eval_iters * s.dist.sequence_shards) for name, value in totals.items()}


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":  # pinned memory lets the copy overlap with compute
        return t.pin_memory().to(device, non_blocking=True)
    return t


class MetricsLog:
    """metrics.jsonl, one JSON object per log step. On resume, lines past the checkpoint (logged
    by the run that died after it) are dropped, so the file reads as one uninterrupted run."""

    def __init__(self, path: Path, enabled: bool, keep_until: int):
        self.path, self.enabled = path, enabled
        if enabled:
            kept = []
            if keep_until and path.is_file():
                # a line cut short by the crash ends the log: nothing valid follows it
                logged = read_jsonl(path, _logged_step, stop_at_bad_line=True, allow_empty=True)
                kept = [record for record in logged if record["step"] <= keep_until]
            write_jsonl(path, kept)

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")


def _logged_step(value: object) -> dict:
    """A metrics.jsonl record: an object with a numeric "step"."""
    if not isinstance(value, dict) or not isinstance(value.get("step"), (int, float)):
        raise DataError('expected an object with a numeric "step"')
    return value
