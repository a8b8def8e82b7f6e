"""Inference: turning a model's logits into text, fast, for many users at once.

    from groklm.infer import Engine, SamplingParams
    engine = Engine.from_run("runs/chat")
    [reply] = engine.generate([prompt_ids], SamplingParams(max_tokens=64, temperature=0))

`Engine` (KV cache, continuous batching, streaming), `AsyncEngine` (the same behind an asyncio
server) and `Grammar` (constrained decoding) are imported on first use, so the CLI can
register its commands without paying for `import torch`.
"""

from __future__ import annotations

import importlib

__all__ = ["Engine", "AsyncEngine", "SamplingParams", "Completion", "Delta", "EngineBusy", "Grammar"]
_HOMES = {name: "groklm.infer.engine" for name in __all__} | {"Grammar": "groklm.infer.constrain"}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'groklm.infer' has no attribute {name!r}")
