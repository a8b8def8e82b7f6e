"""Models: the decoder-only transformer (GPT) and its configuration.

`GPT` and `GPTConfig` are imported on first use, so the CLI can register this stage's
commands without paying for `import torch`.
"""

from __future__ import annotations

import importlib

__all__ = ["GPT", "GPTConfig"]
_HOMES = {"GPT": "groklm.model.gpt", "GPTConfig": "groklm.model.config"}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'groklm.model' has no attribute {name!r}")
