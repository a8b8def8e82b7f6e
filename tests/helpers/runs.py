"""The tiny run every model-facing test starts from: a random-init GPT saved as a run directory.

Random weights are enough to test everything but learning, and a step takes milliseconds. The
tests differ only in the tokenizer and the model's shape, so both are arguments here.
"""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

import torch

from groklm.model import GPT, GPTConfig
from groklm.model.lora import apply_lora, lora_state_dict
from groklm.model.weights import save_weights
from groklm.rundir import METRICS_FILE, RunDir
from groklm.tokenizer import Tokenizer
from groklm.tokenizer.char import CharTokenizer
from groklm.train.reward import RewardModel

ASCII = string.ascii_letters + string.digits + string.punctuation + " \n"


def char_tokenizer(chars: str = ASCII) -> CharTokenizer:
    """A character tokenizer over the distinct characters of `chars`, in sorted order."""
    return CharTokenizer(sorted(set(chars)))


def save_run(directory: Path, model: GPT, tokenizer: Tokenizer | None = None, stage: str = "pretrain") -> Path:
    """Write `model` (and `tokenizer`) as a run directory, as a finished stage would."""
    run = RunDir(directory)
    run.write_config(stage, parent=None, arch="gpt", model=model.config.to_dict(), train={}, data={})
    save_weights(model, run.weights_path)
    if tokenizer is not None:
        tokenizer.save(run.tokenizer_dir)
    return directory


def tiny_run(directory: Path, tokenizer: Tokenizer | str = ASCII, *, seed: int = 0, vocab_size: int | None = None,
             stage: str = "pretrain", block_size: int = 64, n_layer: int = 1, n_head: int = 2, n_embd: int = 16,
             **shape) -> Path:
    """A random-init tiny GPT run directory: config.json, model.safetensors and tokenizer/.

    tokenizer   a Tokenizer, or the characters of a character tokenizer (see char_tokenizer)
    seed        the weights' seed: the same arguments give the same weights, byte for byte
    vocab_size  the embedding rows, when they should not be the tokenizer's vocabulary size
    shape       any other GPTConfig field (pos, norm, mlp, n_kv_head, dropout, ...)
    """
    if isinstance(tokenizer, str):
        tokenizer = char_tokenizer(tokenizer)
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=vocab_size or tokenizer.vocab_size, block_size=block_size, n_layer=n_layer,
                       n_head=n_head, n_embd=n_embd, **shape)
    return save_run(directory, GPT(config), tokenizer, stage)


def perturbed_run(directory: Path, tokenizer: Tokenizer | str = ASCII, *, seed: int = 0, **options) -> GPT:
    """tiny_run with every weight moved off its init (fresh models have unit norm gains and zero
    biases, which could hide a conversion that drops them); returns the saved model."""
    tiny_run(directory, tokenizer, seed=seed, **options)
    model = GPT.from_run(directory)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    save_weights(model, Path(directory) / "model.safetensors")
    return model


def lora_policy(base: Path, rank: int = 4, alpha: float = 8.0) -> GPT:
    """The GPT of run `base` with rank-`rank` adapters whose B is not zero (B = 0 would hide a
    wrong reference model: policy and base would agree anyway), in training mode."""
    policy = GPT.from_run(base)
    apply_lora(policy, rank=rank, alpha=alpha)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in lora_state_dict(policy).items():
            if ".lora_B." in name:
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
    return policy.train()


def read_metrics(run: Path) -> list[dict]:
    """The run's metrics.jsonl, one dict per logged step."""
    return [json.loads(line) for line in (run / METRICS_FILE).read_text().splitlines()]


def make_reward_run(directory: Path, like: Path) -> Path:
    """A random reward model (arch "reward") with the tokenizer and shape of run `like`."""
    config = json.loads((like / "config.json").read_text())["model"]
    directory.mkdir(parents=True)
    save_weights(RewardModel(GPT(GPTConfig.from_dict(config))), directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps({"model": config, "stage": "reward", "arch": "reward"}))
    shutil.copytree(like / "tokenizer", directory / "tokenizer")
    return directory
