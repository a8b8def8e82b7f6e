"""Training throughput: groklm's GPT against Hugging Face's GPT2LMHeadModel of the same shape.

Both models: learned positions, LayerNorm, tanh-GELU MLP, tied embeddings, biases, no dropout;
same batch, same number of steps, AdamW with groklm's parameter groups for both. groklm trains
as its training loop does (`dtype=auto`: bf16 autocast on a CPU with native bf16, else float32;
the fused AdamW); it is also timed in float32 with that AdamW ("groklm_fp32"). The peer runs at
its defaults: float32, its default attention implementation (reported), torch's default AdamW.
Rounds alternate between the contenders so that machine noise hits all alike; the median round
counts. `ratio` is groklm's tokens/s over HF's; `ratio_fp32` the same with groklm in float32.

Prints one JSON line on stdout (progress on stderr):
    python benchmarks/train_throughput.py [--steps 8] [--rounds 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from groklm.model import GPT, GPTConfig  # noqa: E402
from groklm.train.config import TrainConfig  # noqa: E402
from groklm.train.loop import autocast, make_optimizer, param_groups, resolve_dtype  # noqa: E402

SHAPE = dict(vocab_size=8192, block_size=256, n_layer=4, n_head=4, n_embd=256)
CPU = torch.device("cpu")


def hf_model(shape: dict):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=shape["vocab_size"], n_positions=shape["block_size"], n_embd=shape["n_embd"],
        n_layer=shape["n_layer"], n_head=shape["n_head"], activation_function="gelu_new",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5, tie_word_embeddings=True,
        bos_token_id=0, eos_token_id=0,  # GPT-2's 50256 is outside this vocabulary; unused in training
    )
    return GPT2LMHeadModel(config)


def groklm_loss(model, x, y):
    return model(x, y)[1]


def hf_loss(model, x, y):
    # The same loss as groklm's: every position predicts its own target (no internal shift).
    logits = model(input_ids=x).logits
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))


def timed_steps(model, loss_fn, optimizer, batches, dtype=torch.float32) -> float:
    """Seconds for len(batches) full training steps (forward, backward, AdamW)."""
    start = time.perf_counter()
    for x, y in batches:
        with autocast(CPU, dtype):
            loss = loss_fn(model, x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    ours, ours_fp32 = (GPT(GPTConfig(**SHAPE, dropout=0.0, bias=True, pos="learned", norm="layernorm", mlp="gelu",
                                     tie_embeddings=True)) for _ in range(2))
    theirs = hf_model(SHAPE)
    n_ours = ours.num_params()
    n_theirs = sum(p.numel() for p in theirs.parameters())
    assert n_ours == n_theirs, f"shapes differ: {n_ours} vs {n_theirs} parameters"
    train_cfg = TrainConfig(lr=1e-4)
    dtype = resolve_dtype(train_cfg, CPU)  # what groklm's training loop picks on this machine
    models = {
        "groklm": (ours, groklm_loss, make_optimizer(ours, train_cfg, CPU), dtype),
        "groklm_fp32": (ours_fp32, groklm_loss, make_optimizer(ours_fp32, train_cfg, CPU), torch.float32),
        "hf": (theirs, hf_loss, torch.optim.AdamW(param_groups(theirs, 0.1), lr=1e-4), torch.float32),
    }
    B, T = args.batch_size, SHAPE["block_size"]
    data = torch.randint(0, SHAPE["vocab_size"], (args.steps, B, T + 1))
    batches = [(d[:, :-1].contiguous(), d[:, 1:].contiguous()) for d in data]

    for model, loss_fn, opt, precision in models.values():  # warm up: allocator, kernels, caches
        model.train()
        timed_steps(model, loss_fn, opt, batches[:2], precision)
    seconds = {name: [] for name in models}
    for r in range(args.rounds):
        for name, (model, loss_fn, opt, precision) in models.items():
            seconds[name].append(timed_steps(model, loss_fn, opt, batches, precision))
            print(f"round {r + 1}/{args.rounds} {name}: {seconds[name][-1]:.2f}s", file=sys.stderr)

    tokens = args.steps * B * T
    tps = {name: tokens / statistics.median(s) for name, s in seconds.items()}
    import transformers

    print(json.dumps({
        "benchmark": "train_throughput",
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "shape": SHAPE,
        "params": n_ours,
        "batch_size": B,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "groklm_tokens_per_sec": round(tps["groklm"], 1),
        "groklm_fp32_tokens_per_sec": round(tps["groklm_fp32"], 1),
        "hf_tokens_per_sec": round(tps["hf"], 1),
        "ratio": round(tps["groklm"] / tps["hf"], 3),
        "ratio_fp32": round(tps["groklm_fp32"] / tps["hf"], 3),
        "groklm_dtype": str(dtype).removeprefix("torch."),
        "hf_attn_implementation": theirs.config._attn_implementation,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }))


if __name__ == "__main__":
    main()
