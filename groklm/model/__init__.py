"""Models: the decoder-only transformer (GPT) and its configuration."""

from groklm.model.config import GPTConfig
from groklm.model.gpt import GPT

__all__ = ["GPT", "GPTConfig"]
