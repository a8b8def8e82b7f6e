"""nanoGPT's character-level Tiny Shakespeare on CPU, through groklm: final val loss and wall time.

Prepares the text with a character tokenizer, trains the `shakespeare-char` preset (4 layers,
4 heads, 128 wide, 64 context, 2000 steps of 12 sequences) and reports the validation loss
twice: as the run measured it (20 random batches, nanoGPT's protocol; target <= 1.88) and over
every token of the validation split. The text comes from ../shared/data/tinyshakespeare.txt
beside the repo, $GROKLM_SHAKESPEARE, or the groklm cache (this script never downloads).

Prints one JSON line on stdout (progress on stderr):
    python benchmarks/shakespeare_char.py [--iters 2000] [--out RUN] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGET_VAL_LOSS = 1.88


def full_val_loss(run: Path, data: Path) -> float:
    """Mean loss over every non-overlapping block of val.bin (no sampling noise)."""
    import numpy as np
    import torch

    from groklm.data.shards import TokenShards
    from groklm.model import GPT

    model = GPT.from_run(run)
    T = model.config.block_size
    val = torch.from_numpy(TokenShards(data).val.astype(np.int64))
    n = (len(val) - 1) // T
    x, y = val[: n * T].view(n, T), val[1 : n * T + 1].view(n, T)
    total = 0.0
    with torch.no_grad():
        for i in range(0, n, 256):
            total += model(x[i : i + 256], y[i : i + 256])[1].item() * len(x[i : i + 256])
    return total / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--out", type=Path, help="keep the run here (default: a temporary directory)")
    parser.add_argument("--path", help="Tiny Shakespeare file (default: ../shared/data, $GROKLM_SHAKESPEARE, the cache)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice); 1 is steadier on a busy machine")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from groklm.data.prepare import prepare
    from groklm.data.sources import shakespeare_file
    from groklm.train.plots import read_metrics
    from groklm.train.pretrain import pretrain

    shared = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
    text = shakespeare_file(args.path or (shared if shared.is_file() else None), download=False)
    with tempfile.TemporaryDirectory() as tmp:
        data, run = Path(tmp) / "data", args.out or Path(tmp) / "run"
        prepare(["shakespeare"], "char", data, shakespeare_path=text, progress=False)
        start = time.perf_counter()
        pretrain(data, run, preset="shakespeare-char", overrides={"max_iters": args.iters, "lr_decay_iters": args.iters})
        wall = time.perf_counter() - start
        last = read_metrics(run / "metrics.jsonl")[-1]
        full = full_val_loss(run, data)

    print(json.dumps({
        "benchmark": "shakespeare_char",
        "iters": last["step"],
        "val_loss": round(last["val_loss"], 4),
        "val_loss_full": round(full, 4),
        "train_loss": round(last["loss"], 4),
        "target_val_loss": TARGET_VAL_LOSS,
        "met_target": last["val_loss"] <= TARGET_VAL_LOSS,
        "wall_seconds": round(wall, 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
