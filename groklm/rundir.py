"""The run directory: the one contract every stage reads and writes.

    RUN/
      config.json          {"model": {...GPTConfig...}, "train": {...}, "stage": "pretrain", ...}
      model.safetensors    the weights (safetensors: no pickle, safe to load from anyone)
      tokenizer/           the tokenizer files
      metrics.jsonl        one JSON object per log step
      checkpoint/          optimizer + RNG + data position, for exact resume
      *.png, report.md     plots and a human summary

Every write here is atomic: write a temporary file in the same directory, fsync, then
`os.replace` it over the target. A crash mid-write leaves the previous good file intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from groklm.errors import CheckpointError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoint"


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success it replaces `target` atomically."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by groklm, with a clear error if it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is corrupt (not valid JSON: {error})") from error


def read_config(run_dir: str | os.PathLike) -> dict:
    """The run's config.json, checked to be a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    config = read_json(run_dir / CONFIG_FILE)
    if not isinstance(config, dict) or "model" not in config:
        raise CheckpointError(f"{run_dir / CONFIG_FILE} has no 'model' section: not a groklm run")
    return config


def save_weights(model, path: str | os.PathLike) -> None:
    """Save a module's weights as safetensors, atomically (tied weights are stored once)."""
    from safetensors.torch import save_model

    with atomic_path(path) as tmp:
        save_model(model, str(tmp))


def load_weights(model, path: str | os.PathLike) -> None:
    """Load safetensors weights into `model`, strictly: every tensor must match by name and shape."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except (SafetensorError, RuntimeError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is corrupt or does not fit the model: {error}") from error
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit the model config: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
