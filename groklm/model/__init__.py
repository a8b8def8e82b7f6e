"""Models: the decoder-only transformer (GPT), recurrent LMs (rnn, lstm, gru), state-space and
linear-attention LMs (mamba, rwkv, and the jamba hybrid), the BERT-style
encoder, their configurations, LoRA adapters (lora.py), and `load_model(run)` for whichever a
run directory holds.

    from groklm.model import GPT, GPTConfig
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64))
"""

from __future__ import annotations

from groklm.model.arch import load_model
from groklm.model.config import GPTConfig
from groklm.model.encoder import Encoder, EncoderConfig
from groklm.model.gpt import GPT
from groklm.model.jamba import JambaConfig, JambaLM
from groklm.model.lora import LoRALinear, apply_lora, load_lora_state_dict, lora_state_dict, merge_lora
from groklm.model.mamba import MambaConfig, MambaLM
from groklm.model.rnn import RecurrentLM, RNNConfig
from groklm.model.rwkv import RWKVLM, RWKVConfig

__all__ = ["GPT", "GPTConfig", "RNNConfig", "RecurrentLM", "MambaConfig", "MambaLM", "RWKVConfig", "RWKVLM",
           "JambaConfig", "JambaLM", "load_model", "Encoder", "EncoderConfig",
           "LoRALinear", "apply_lora", "merge_lora", "lora_state_dict", "load_lora_state_dict"]
