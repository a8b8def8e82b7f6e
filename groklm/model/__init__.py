"""Models: the decoder-only transformer (GPT), recurrent LMs (rnn, lstm, gru), their configurations,
and `load_model(run)` for whichever a run directory holds.

Each is imported on first use, so the CLI can register this stage's
commands without paying for `import torch`.
"""

from __future__ import annotations

import importlib

__all__ = ["GPT", "GPTConfig", "RNNConfig", "RecurrentLM", "load_model", "Encoder", "EncoderConfig"]
_HOMES = {"GPT": "groklm.model.gpt", "GPTConfig": "groklm.model.config", "RNNConfig": "groklm.model.rnn",
          "RecurrentLM": "groklm.model.rnn", "load_model": "groklm.model.arch",
          "Encoder": "groklm.model.encoder", "EncoderConfig": "groklm.model.encoder"}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'groklm.model' has no attribute {name!r}")
