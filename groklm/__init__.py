"""groklm: the whole life of a language model in one small, readable codebase.

    import groklm
    model, tokenizer = groklm.load("runs/tiny")

The package is layered, bottom to top: tokenizer -> model -> infer -> tasks, data -> train -> eval -> serve
-> apps -> experiments -> cli (docs/architecture.md). `import groklm` loads nothing heavy: `load` imports the
model code (and torch) when it is called.
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def load(run_dir: str | Path, device: str = "cpu"):
    """Load a run directory's model (in eval mode: a GPT, or an RNN/LSTM/GRU for such runs) and
    tokenizer: `(model, tokenizer)`. See groklm.runs.load."""
    from groklm.runs import load as load_run  # deferred: `import groklm` stays light

    return load_run(run_dir, device)
