"""A model's weights on disk: safetensors (no pickle, so a file from anyone is safe to load),
written atomically, read strictly.

This lives in model/, not beside the run directory's other files in rundir.py, because
safetensors.torch imports torch: rundir.py is read by the tokenizer and the command line's
parser, which run without torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from groklm.errors import CheckpointError
from groklm.rundir import atomic_path


def save_weights(model, path: str | os.PathLike) -> None:
    """Save a module's weights as safetensors, atomically (tied weights are stored once)."""
    with atomic_path(path) as tmp:
        save_model(model, str(tmp))


def load_weights(model, path: str | os.PathLike) -> None:
    """Load safetensors weights into `model`, strictly: every tensor must match by name and shape."""
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
