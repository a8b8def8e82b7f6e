"""Training throughput of the architectures `groklm compare` races, at an equal parameter count,
and of groklm's step-by-step Elman RNN against its peer torch.nn.RNN (fused C++ loop).

Every model gets the same batch (batch x context tokens) and the same AdamW; the width of each
is sized to --params as `groklm compare` sizes it. Rounds alternate between the models so that
machine noise hits all alike; the median round counts. Ratios are what to read: the GPT runs all
positions of a window at once, a recurrent model one position after another.

Prints one JSON line on stdout (progress on stderr):
    python benchmarks/recurrent.py [--params 400000] [--context 64] [--batch 16] [--steps 5] [--rounds 3] [--threads N]
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

from groklm.experiments.compare import size_model  # noqa: E402
from groklm.model.arch import build_model, make_config  # noqa: E402
from groklm.model.rnn import ElmanRNN  # noqa: E402
from groklm.train.loop import param_groups  # noqa: E402

VOCAB = 128  # characters: the recurrent part, not the head, dominates


def tokens_per_second(model, batches) -> float:
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3)
    start = time.perf_counter()
    for x, y in batches:
        model(x, y)[1].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return sum(x.numel() for x, _ in batches) / (time.perf_counter() - start)


def recurrence_seconds(rnn, x) -> float:
    """Forward + backward of one recurrent layer stack (no embedding, no head)."""
    start = time.perf_counter()
    out, _ = rnn(x)
    out.sum().backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=int, default=400_000)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    models = {}
    for name in ("gpt", "rnn", "lstm", "gru"):
        arch, values = size_model(name, args.params, VOCAB, {"block_size": args.context}, 8, 2)
        models[name] = build_model(arch, make_config(arch, values))
    batches = [(torch.randint(0, VOCAB, (args.batch, args.context)),) * 2 for _ in range(args.steps)]
    width = models["rnn"].config.n_embd
    mine, reference = ElmanRNN(width, width, 2), torch.nn.RNN(width, width, 2, batch_first=True)
    mine.load_state_dict(reference.state_dict())
    x = torch.randn(args.batch, args.context, width)

    speeds = {name: [] for name in models}
    elman = {"groklm": [], "torch": []}
    for r in range(args.rounds):
        for name, model in models.items():
            tokens_per_second(model, batches[:1])  # warm-up
            speeds[name].append(tokens_per_second(model, batches))
        elman["groklm"].append(recurrence_seconds(mine, x))
        elman["torch"].append(recurrence_seconds(reference, x))
        print(f"round {r + 1}: " + ", ".join(f"{n} {s[-1]:,.0f} tok/s" for n, s in speeds.items()), file=sys.stderr)

    median = {name: statistics.median(s) for name, s in speeds.items()}
    print(json.dumps({
        "benchmark": "recurrent",
        "params": {name: model.num_params() for name, model in models.items()},
        "context": args.context, "batch": args.batch, "threads": torch.get_num_threads(),
        "train_tokens_per_sec": {name: round(v) for name, v in median.items()},
        "gpt_vs": {name: round(median["gpt"] / v, 2) for name, v in median.items() if name != "gpt"},
        "elman_step_by_step_vs_torch_rnn_time": round(statistics.median(elman["groklm"]) / statistics.median(elman["torch"]), 2),
    }))


if __name__ == "__main__":
    main()
