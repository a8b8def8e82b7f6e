"""nanoGPT's own CPU recipe beside groklm's preset, in one run: wall time and val loss.

nanoGPT's README trains a character-level Tiny Shakespeare model on a CPU with

    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
        --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
        --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0

and reaches a val loss of about 1.88. This benchmark runs exactly that (from a clone of
https://github.com/karpathy/nanoGPT given with --nanogpt, kept outside this repo; nothing of it is
imported here but its model.py, to score its checkpoint) and `groklm pretrain --preset
shakespeare-char` (the same shape, schedule, batch, 20 val batches every 250 steps), each as a
fresh process with the same torch threads, alternating who goes first when repeated.

Both train on the first 90% of the text (nanoGPT's prepare.py split; groklm's holds out one
character less, by rounding) and both final models are scored here on the same validation text,
nanoGPT's last 10%: every non-overlapping block of 64 characters (no sampling noise), each
through its own character ids. The
run's own val_loss (20 random batches) is reported too.

Notes on fairness, kept in the JSON line: nanoGPT also evaluates at step 0 and scores 20 train
batches beside the 20 val ones at each evaluation (its recipe), runs one step past max_iters,
and prints every step; groklm evaluates at steps 250..2000 and logs every 10. Its checkpoint is
written at every evaluation (--always_save_checkpoint=True, so the model after the last step is
the one scored); groklm checkpoints at every evaluation too.

Prints one JSON line (progress on stderr); `ratio` = nanoGPT's wall time / groklm's (above 1:
groklm is faster):
    python benchmarks/nanogpt_recipe.py --nanogpt ~/src/nanoGPT [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from groklm.data.shards import TokenShards  # noqa: E402
from groklm.model import GPT  # noqa: E402
from groklm.tokenizer import load_tokenizer  # noqa: E402

RECIPE = ["--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1", "--block_size=64",
          "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--dropout=0.0"]
BLOCK = 64


def nanogpt_data(text: str, folder: Path) -> None:
    """data/shakespeare_char/ as nanoGPT's prepare.py lays it out (its ids: sorted characters)."""
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    n = int(len(text) * 0.9)
    folder.mkdir(parents=True)
    np.array([stoi[c] for c in text[:n]], dtype=np.uint16).tofile(folder / "train.bin")
    np.array([stoi[c] for c in text[n:]], dtype=np.uint16).tofile(folder / "val.bin")
    with open(folder / "meta.pkl", "wb") as f:  # train.py reads its vocabulary size from here
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, f)


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return wall


def block_loss(forward, ids: np.ndarray) -> float:
    """Mean next-character loss over every non-overlapping block of BLOCK characters."""
    ids = torch.from_numpy(ids.astype(np.int64))
    n = (len(ids) - 1) // BLOCK
    x, y = ids[: n * BLOCK].view(n, BLOCK), ids[1 : n * BLOCK + 1].view(n, BLOCK)
    total = 0.0
    with torch.no_grad():
        for i in range(0, n, 256):
            total += forward(x[i : i + 256], y[i : i + 256]).item() * len(x[i : i + 256])
    return total / n


def nanogpt_val(nanogpt: Path, work: Path) -> tuple[float, float]:
    """(full val loss, the run's last logged val loss) of nanoGPT's checkpoint, with its own model.py."""
    spec = importlib.util.spec_from_file_location("nanogpt_model", nanogpt / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ckpt = torch.load(work / "out" / "ckpt.pt", map_location="cpu", weights_only=True)
    model = module.GPT(module.GPTConfig(**ckpt["model_args"]))
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
    model.eval()
    val = np.fromfile(work / "data" / "shakespeare_char" / "val.bin", dtype=np.uint16)
    return block_loss(lambda x, y: model(x, y)[1], val), float(ckpt["best_val_loss"])


def groklm_val(run: Path, val_text: str) -> tuple[float, float]:
    """(full val loss, the run's last logged val loss) of groklm's run, on nanoGPT's validation text."""
    model = GPT.from_run(run)
    val = np.array(load_tokenizer(run / "tokenizer").encode(val_text), dtype=np.int64)
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    return block_loss(lambda x, y: model(x, y)[1], val), float(last["val_loss"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nanogpt", type=Path, required=True,
                        help="a clone of karpathy/nanoGPT (train.py, model.py, configurator.py, config/)")
    parser.add_argument("--path", type=Path, default=REPO.parent / "shared" / "data" / "tinyshakespeare.txt",
                        help="Tiny Shakespeare")
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each; the medians are reported")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads for both (OMP_NUM_THREADS)")
    args = parser.parse_args()
    for name in ("train.py", "model.py", "configurator.py", "config/train_shakespeare_char.py"):
        if not (args.nanogpt / name).is_file():
            sys.exit(f"--nanogpt {args.nanogpt} has no {name}: give a clone of https://github.com/karpathy/nanoGPT")
    text = args.path.read_text(encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore"}
    recipe = [*RECIPE, f"--max_iters={args.iters}", f"--lr_decay_iters={args.iters}", "--always_save_checkpoint=True"]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "groklm-data"
        subprocess.run([sys.executable, "-m", "groklm", "data", "prepare", "shakespeare", "--tokenizer", "char",
                        "--out", str(data), "--shakespeare-path", str(args.path)], cwd=REPO, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        # groklm holds out the last 10% of the token stream too (one character less, by rounding):
        # both are scored below on nanoGPT's validation text exactly.
        val_text = text[int(len(text) * 0.9):]
        if not val_text.endswith(load_tokenizer(data / "tokenizer").decode(TokenShards(data).val.tolist())):
            sys.exit("groklm's validation split is not the end of the text")

        walls: dict[str, list[float]] = {"nanogpt": [], "groklm": []}
        vals: dict[str, list[tuple[float, float]]] = {"nanogpt": [], "groklm": []}
        for repeat in range(args.repeats):
            for side in (("nanogpt", "groklm") if repeat % 2 == 0 else ("groklm", "nanogpt")):
                print(f"run {repeat + 1}/{args.repeats}: {side} ...", file=sys.stderr)
                if side == "nanogpt":
                    work = tmp / f"nanogpt-{repeat}"
                    (work / "config").mkdir(parents=True)
                    shutil.copy(args.nanogpt / "configurator.py", work)
                    shutil.copy(args.nanogpt / "config" / "train_shakespeare_char.py", work / "config")
                    nanogpt_data(text, work / "data" / "shakespeare_char")
                    wall = timed([sys.executable, str(args.nanogpt / "train.py"), "config/train_shakespeare_char.py",
                                  *recipe, "--out_dir=out"], work, env)
                    vals[side].append(nanogpt_val(args.nanogpt, work))
                else:
                    run = tmp / f"groklm-{repeat}"
                    wall = timed([sys.executable, "-m", "groklm", "pretrain", "--data", str(data), "--out", str(run),
                                  "--preset", "shakespeare-char", "--no-progress", "--set", f"max_iters={args.iters}",
                                  f"lr_decay_iters={args.iters}"], REPO, env)
                    vals[side].append(groklm_val(run, val_text))
                walls[side].append(wall)
                print(f"  {wall:.1f}s, val loss {vals[side][-1][0]:.4f}", file=sys.stderr)

    median = {side: statistics.median(w) for side, w in walls.items()}
    print(json.dumps({
        "benchmark": "nanogpt_recipe",
        "ratio": round(median["nanogpt"] / median["groklm"], 3),
        "groklm_wall_s": round(median["groklm"], 1), "nanogpt_wall_s": round(median["nanogpt"], 1),
        "groklm_walls": [round(w, 1) for w in walls["groklm"]], "nanogpt_walls": [round(w, 1) for w in walls["nanogpt"]],
        "groklm_val": round(statistics.median(v[0] for v in vals["groklm"]), 4),
        "nanogpt_val": round(statistics.median(v[0] for v in vals["nanogpt"]), 4),
        "groklm_run_val": round(statistics.median(v[1] for v in vals["groklm"]), 4),
        "nanogpt_run_val": round(statistics.median(v[1] for v in vals["nanogpt"]), 4),
        "val": f"every {BLOCK}-character block of the last 10% of the text, both models",
        "iters": args.iters, "threads": args.threads, "repeats": args.repeats, "torch": torch.__version__,
        "evaluations": {"nanogpt": f"{args.iters // 250 + 1} x (20 train + 20 val batches)",
                        "groklm": f"{args.iters // 250} x 20 val batches"},
    }))


if __name__ == "__main__":
    main()
