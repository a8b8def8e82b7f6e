"""The reference decoder: one token at a time, one plain forward pass per token.

    prompt ──► next_logits(prompt) ──► hook (e.g. a grammar's mask) ──► sample ──► token
                     ▲                                                              │
                     └──────────────── next_logits(token) ◄─────────────────────────┘

This is generation at its most readable, for any model that gives logits: a GPT re-reading
its last block_size tokens (no KV cache), an RNN carrying its state forward, a Hugging Face
checkpoint with its own cache (groklm.apps.backends.hf). The engine (groklm.infer.engine:
KV cache, continuous batching) is tested token for token against it.

A `NextLogits` is the only model-specific part: a callable that is fed the tokens the model
has not seen yet, (B, T), and returns the logits of the position after them, (B, vocab).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from groklm.infer.sampling import check_sampling, sample_next
from groklm.model.lm_base import TokenLM
from groklm.model.rnn import RecurrentLM

NextLogits = Callable[[torch.Tensor], torch.Tensor]
LogitsHook = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Step:
    token: torch.Tensor  # (B, 1) the ids just chosen
    logits: torch.Tensor  # (B, vocab) float32, after the hook, before temperature: what a logprob is read from


class WindowedForward:
    """A model whose forward(idx) gives (logits, ...), e.g. a GPT: every step re-reads the whole
    text so far, cut to the last block_size tokens (the window slides past the context)."""

    def __init__(self, model):
        self.model = model
        self.text: torch.Tensor | None = None

    def __call__(self, new: torch.Tensor) -> torch.Tensor:
        self.text = new if self.text is None else torch.cat([self.text, new], dim=1)
        logits, _ = self.model(self.text[:, -self.model.config.block_size :])
        return logits[:, -1]


class CarriedState:
    """A RecurrentLM or a TokenLM (Mamba, RWKV, Jamba): read the prompt once, then one step per
    token from the carried state (no window: the state is the whole past, so generation can run
    past block_size)."""

    def __init__(self, model: RecurrentLM | TokenLM):
        self.model = model
        self.state = None

    def __call__(self, new: torch.Tensor) -> torch.Tensor:
        logits, self.state = self.model.step(new, self.state)
        return logits[:, -1]


def next_logits_of(model) -> NextLogits:
    """The way to feed a groklm language model (a GPT or a RecurrentLM) one token at a time."""
    return CarriedState(model) if isinstance(model, (RecurrentLM, TokenLM)) else WindowedForward(model)


@torch.no_grad()
def decode(
    next_logits: NextLogits,
    prompt: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    hook: LogitsHook | None = None,
) -> Iterator[Step]:
    """Yield one Step per new token for the prompt ids (B, T), up to max_new_tokens.

    The caller decides when a text ends (a stop token, a stop string): it simply stops
    iterating. `hook` may change each step's logits (B, vocab) before sampling, e.g. set the
    tokens a grammar forbids to -inf; a caller that advances its grammar with each yielded
    token sees the hook called with the grammar's new state, since the loop only resumes when
    asked for the next token. The same seed gives the same tokens."""
    check_sampling(temperature, top_k, top_p)
    generator = None if seed is None else torch.Generator(device=prompt.device).manual_seed(seed)
    feed = prompt
    for _ in range(max_new_tokens):
        logits = next_logits(feed).float()
        if hook is not None:
            logits = hook(logits)
        token = sample_next(logits, temperature, top_k, top_p, generator)
        yield Step(token, logits)
        feed = token


def generate(
    model,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """idx (B, T) -> (B, T + max_new_tokens): the prompt followed by sampled tokens."""
    steps = decode(next_logits_of(model), idx, max_new_tokens, temperature, top_k, top_p, seed)
    return torch.cat([idx, *(step.token for step in steps)], dim=1)
