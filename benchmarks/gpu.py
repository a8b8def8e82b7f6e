"""GPU training throughput and model FLOPs utilization (MFU) of the GPT-2 small (124M) shape.

MFU = (training FLOPs per token x tokens per second) / the chip's peak dense bf16 FLOP/s,
where FLOPs per token is GPT.flops_per_token (6 N + 12 L T d). It says how much of the chip
the training step actually uses; the rest is memory traffic, launch overhead and idling.
Runs the same step as `groklm pretrain` (bf16 autocast, fused AdamW, torch.compile) on random
tokens, so it measures the model and loop, not the data pipeline.

Prints one JSON line on stdout (progress on stderr). Without a CUDA GPU it says so and exits 1.
    python benchmarks/gpu.py [--batch-size 16] [--steps 20] [--no-compile] [--peak-flops 989e12]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Dense bf16 peak FLOP/s by device-name fragment (vendor datasheets, without sparsity).
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def peak_flops(device_name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((peak for key, peak in PEAK_BF16.items() if key in device_name), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="timed steps (after 3 warm-up steps)")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--peak-flops", type=float, help="peak bf16 FLOP/s of the device (default: from its name)")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("benchmarks/gpu.py needs a CUDA GPU and this machine has none (torch.cuda.is_available() is False); "
              "run it on a GPU machine.", file=sys.stderr)
        sys.exit(1)

    from groklm.model import GPT, GPTConfig
    from groklm.train.config import TrainConfig, preset
    from groklm.train.loop import autocast, make_optimizer, resolve_device

    model_values, train_values = preset("gpt2-124m")
    config = GPTConfig(vocab_size=50304, **model_values)  # GPT-2's 50257 padded to a multiple of 64
    cfg = TrainConfig(**{**train_values, "batch_size": args.batch_size, "compile": not args.no_compile})
    device = resolve_device(cfg)
    name = torch.cuda.get_device_name(device)
    peak = peak_flops(name, args.peak_flops)

    torch.manual_seed(0)
    model = GPT(config).to(device)
    optimizer = make_optimizer(model, cfg, device)
    step_model = torch.compile(model) if cfg.compile else model
    B, T = cfg.batch_size, config.block_size
    x = torch.randint(0, config.vocab_size, (B, T), device=device)
    y = torch.randint(0, config.vocab_size, (B, T), device=device)

    def step() -> None:
        with autocast(device, torch.bfloat16):
            _, loss = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    started = time.perf_counter()
    for _ in range(3):  # compile, autotune, allocator warm-up
        step()
    torch.cuda.synchronize()
    print(f"warm-up (compile) {time.perf_counter() - started:.1f}s on {name}", file=sys.stderr)
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started

    tokens_per_sec = B * T * args.steps / seconds
    flops_per_token = model.flops_per_token(T)
    print(json.dumps({
        "benchmark": "gpu",
        "device": name,
        "shape": "gpt2-124m",
        "params": model.num_params(),
        "batch_size": B,
        "block_size": T,
        "dtype": "bfloat16",
        "compile": cfg.compile,
        "step_ms": round(1000 * seconds / args.steps, 2),
        "tokens_per_sec": round(tokens_per_sec),
        "flops_per_token": flops_per_token,
        "peak_flops": peak,
        "mfu": round(flops_per_token * tokens_per_sec / peak, 4) if peak else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
