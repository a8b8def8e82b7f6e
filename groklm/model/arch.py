"""Which model a run holds: config.json's "arch" names it, this module builds and loads it.

    gpt              the decoder transformer (GPTConfig, gpt.py), with or without MoE, with or
                     without LoRA adapters (a "lora" section: the base run's weights + adapters)
    rnn, lstm, gru   recurrent language models (RNNConfig, rnn.py); the arch is the cell
    mamba            a selective state-space model (MambaConfig, mamba.py)
    rwkv             RWKV's time and channel mixing (RWKVConfig, rwkv.py)
    jamba            attention layers among Mamba layers (JambaConfig, jamba.py)

Every language model here answers the same calls: model(idx, targets) -> (logits, loss),
num_params(). So training, sampling (groklm.infer.decode) and evaluation need not care which
one they hold; only construction and loading dispatch on the arch.
"""

from __future__ import annotations

import os
from pathlib import Path

from groklm.errors import CheckpointError, ConfigError
from groklm.model.config import GPTConfig
from groklm.model.gpt import GPT
from groklm.model.jamba import JambaConfig, JambaLM
from groklm.model.lora import apply_lora_section, check_lora_base, load_trained_weights
from groklm.model.mamba import MambaConfig, MambaLM
from groklm.model.rnn import CELLS, RecurrentLM, RNNConfig
from groklm.model.rwkv import RWKVLM, RWKVConfig
from groklm.model.weights import load_weights
from groklm.rundir import WEIGHTS_FILE, read_config

# arch -> (its config dataclass, its model class)
CLASSES = {"gpt": (GPTConfig, GPT), **{cell: (RNNConfig, RecurrentLM) for cell in CELLS},
           "mamba": (MambaConfig, MambaLM), "rwkv": (RWKVConfig, RWKVLM), "jamba": (JambaConfig, JambaLM)}
LM_ARCHS = tuple(CLASSES)


def check_arch(arch: str) -> str:
    if arch not in LM_ARCHS:
        raise ConfigError(f"arch must be one of {', '.join(LM_ARCHS)}; got {arch!r}")
    return arch


def config_class(arch: str) -> type:
    """The config dataclass of an arch (GPTConfig, RNNConfig, MambaConfig, ...)."""
    return CLASSES[check_arch(arch)][0]


def make_config(arch: str, values: dict):
    """The arch's config from {field: value}; for a recurrent cell (rnn, lstm, gru) the cell is the arch."""
    cls = config_class(arch)
    if arch not in CELLS:
        return cls.from_dict(values)
    if values.get("cell", arch) != arch:
        raise ConfigError(f"cell={values['cell']!r} contradicts arch={arch!r}; the arch names the cell")
    return cls.from_dict({**values, "cell": arch})


def build_model(arch: str, config):
    return CLASSES[check_arch(arch)][1](config)


def load_model(run_dir: str | os.PathLike, device: str = "cpu"):
    """The language model a run directory holds, whatever its arch, in eval mode."""
    saved = read_config(run_dir)
    arch = saved.get("arch", "gpt")  # runs from before the "arch" key are GPTs
    if arch not in LM_ARCHS:
        raise CheckpointError(f"{run_dir} holds a {arch!r} model, not a language model ({', '.join(LM_ARCHS)})")
    model = build_model(arch, make_config(arch, saved["model"]))
    if "lora" in saved:
        # A LoRA run holds only adapters: the base run's weights (checked unchanged), then them.
        load_weights(model, check_lora_base(saved["lora"], run_dir) / WEIGHTS_FILE)
        apply_lora_section(model, saved["lora"])
        load_trained_weights(model, run_dir)
    else:
        load_weights(model, Path(run_dir) / WEIGHTS_FILE)
    return model.to(device).eval()
