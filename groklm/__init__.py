"""groklm: the whole life of a language model in one small, readable codebase.

    import groklm
    model, tokenizer = groklm.load("runs/tiny")

Submodules follow the life of a model: tokenizer -> data -> model -> train -> infer -> serve -> apps.
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def load(run_dir: str | Path, device: str = "cpu"):
    """Load a run directory's model (in eval mode: a GPT, or an RNN/LSTM/GRU for such runs) and
    tokenizer: `(model, tokenizer)`."""
    from groklm.model import load_model
    from groklm.rundir import TOKENIZER_DIR
    from groklm.tokenizer import load_tokenizer

    model = load_model(run_dir, device=device)
    return model, load_tokenizer(Path(run_dir) / TOKENIZER_DIR)
