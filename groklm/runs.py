"""Loading a run directory: the model it holds and its tokenizer, ready to use.

    from groklm.runs import load
    model, tokenizer = load("runs/chat")
    merge_run("runs/chat-lora", "runs/chat-merged")   # a LoRA run -> a plain run

The layer above the model and the tokenizer, and below everything that uses a trained run
(inference, evals, serving, applications). `groklm.load` is this function.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from groklm.errors import ConfigError
from groklm.model.arch import load_model
from groklm.model.lora import merge_lora
from groklm.model.weights import save_weights
from groklm.rundir import TOKENIZER_DIR, RunDir, read_config
from groklm.tokenizer import load_tokenizer


def load(run_dir: str | Path, device: str = "cpu", merge_adapters: bool = True):
    """Load a run directory's model (in eval mode: a GPT, or an RNN/LSTM/GRU for such runs) and
    tokenizer: `(model, tokenizer)`.

    A LoRA run loads as its base run's weights plus its adapters (the base checked unchanged),
    folded in by default: the same function at a plain model's speed, and code that reads the
    weights (the exporters) sees the weights the model really computes with. merge_adapters=False
    keeps the LoRALinear layers, to look at the adapters or train them further."""
    model = load_model(run_dir, device=device)
    if merge_adapters:
        merge_lora(model).eval()  # (a plain run's model: no LoRA layers, a no-op)
    return model, load_tokenizer(Path(run_dir) / TOKENIZER_DIR)


def merge_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Fold a LoRA run's adapters into its base's weights: a new, ordinary run directory that
    needs neither the base nor LoRA to load (and exports like any run). Returns its path.

    The new run is assembled in a hidden sibling folder and renamed into place at the end, so a
    failure leaves nothing behind."""
    run_dir, out = Path(run_dir), RunDir(out_dir)
    saved = read_config(run_dir)
    if "lora" not in saved:
        raise ConfigError(f"{run_dir} has no LoRA adapters to merge: it is already a plain run")
    out.check_fresh(remedy="choose another --out")
    if out.path.exists() and any(out.path.iterdir()):
        raise ConfigError(f"{out.path} is not empty; choose a new --out")
    model = merge_lora(load_model(run_dir))
    staging = RunDir(out.path.with_name(f".{out.path.name}.merging"))
    shutil.rmtree(staging.path, ignore_errors=True)
    try:
        staging.write_config("merge", parent=run_dir, arch="gpt", model=saved["model"], train=None, data={},
                             merge={"lora": saved["lora"]})
        save_weights(model, staging.weights_path)
        staging.copy_tokenizer(Path(run_dir) / TOKENIZER_DIR)
        if out.path.exists():
            out.path.rmdir()  # empty (checked above): the rename needs the name free
        os.replace(staging.path, out.path)
    finally:
        shutil.rmtree(staging.path, ignore_errors=True)
    return out.path
