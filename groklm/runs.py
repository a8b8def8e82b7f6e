"""Loading a run directory: the model it holds and its tokenizer, ready to use.

    from groklm.runs import load
    model, tokenizer = load("runs/chat")

The layer above the model and the tokenizer, and below everything that uses a trained run
(inference, evals, serving, applications). `groklm.load` is this function.
"""

from __future__ import annotations

from pathlib import Path

from groklm.model.arch import load_model
from groklm.rundir import TOKENIZER_DIR
from groklm.tokenizer import load_tokenizer


def load(run_dir: str | Path, device: str = "cpu"):
    """Load a run directory's model (in eval mode: a GPT, or an RNN/LSTM/GRU for such runs) and
    tokenizer: `(model, tokenizer)`."""
    model = load_model(run_dir, device=device)
    return model, load_tokenizer(Path(run_dir) / TOKENIZER_DIR)
