"""Sequence to sequence: a GRU encoder-decoder, with or without additive (Bahdanau) attention,
and the synthetic transduction tasks it is measured on.

    source ──► encoder GRU ──► states h_1..h_L ──► decoder GRU, one output token per step ──► target

Without attention (Cho et al., 2014) the decoder sees the source only through the encoder's
final state: the whole input squeezed into one fixed-size vector, handed to every step. That
works for short inputs and breaks down as they grow. With attention (Bahdanau et al., 2014)
each decoder step looks back at every encoder state and takes a weighted average of them:

    score_j = v . tanh(W s_{t-1} + U h_j)      how relevant source position j is now
    a       = softmax(score)                    the alignment: one weight per source position
    c_t     = sum_j a_j h_j                      the context for this step

so the decoder reads what it needs when it needs it, and the bottleneck is gone. This is the
idea the transformer kept (and made the whole model out of). Both variants below share every
other part, so the measured gap is attention's alone.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.figure import Figure

from groklm.errors import ConfigError

# ---- the tasks ------------------------------------------------------------------------------

BOS, EOS = 0, 1  # decoder start and end of output; symbols are the ids from FIRST_SYMBOL on
FIRST_SYMBOL = 2
TASKS = ("reverse", "translate")


@dataclass
class TaskConfig:
    """A transduction task over random strings of `n_symbols` symbols, min_len..max_len long.

    reverse:    "abcd" -> "dcba"; every output needs a far-away input, the hardest case
                for a fixed-size summary (the first output is the last input, and so on).
    translate:  a toy translation: each symbol has a fixed "word" in the target language
                (a permutation of the symbols) and adjacent pairs swap order, like an
                adjective following its noun: "abcd" -> "B A D C" in the other alphabet.
    """

    task: str = "reverse"
    n_symbols: int = 20
    min_len: int = 1
    max_len: int = 20

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}; got {self.task!r}")
        if self.n_symbols < 2:
            raise ConfigError(f"n_symbols must be at least 2, got {self.n_symbols}")
        if not 1 <= self.min_len <= self.max_len:
            raise ConfigError(f"need 1 <= min_len <= max_len, got min_len={self.min_len}, max_len={self.max_len}")

    @property
    def vocab_size(self) -> int:
        return FIRST_SYMBOL + self.n_symbols

    def to_dict(self) -> dict:
        return asdict(self)


def transduce(task: TaskConfig, source: torch.Tensor) -> torch.Tensor:
    """The correct output for source symbols (B, L) (ids from FIRST_SYMBOL on)."""
    if task.task == "reverse":
        return source.flip(1)
    # The "dictionary": a fixed permutation of the symbols, the same for every run.
    dictionary = torch.randperm(task.n_symbols, generator=torch.Generator().manual_seed(0)) + FIRST_SYMBOL
    translated = dictionary[source - FIRST_SYMBOL]
    L = source.size(1)
    order = torch.arange(L)
    paired = L - L % 2  # an odd last word has no partner and stays put
    order[:paired] = order[:paired].view(-1, 2).flip(1).reshape(-1)
    return translated[:, order]


def make_batch(task: TaskConfig, length: int, batch_size: int, generator: torch.Generator):
    """(source (B, L), decoder input (B, L+1), decoder target (B, L+1)): all B examples have the
    same length, so no padding is needed. The decoder reads BOS + target and predicts target + EOS."""
    source = torch.randint(FIRST_SYMBOL, task.vocab_size, (batch_size, length), generator=generator)
    target = transduce(task, source)
    bos = torch.full((batch_size, 1), BOS)
    eos = torch.full((batch_size, 1), EOS)
    return source, torch.cat([bos, target], dim=1), torch.cat([target, eos], dim=1)


def symbol_names(task: TaskConfig, ids: list[int]) -> list[str]:
    """Readable labels: a, b, c, ... (numbers past 26 symbols); BOS and EOS by name."""
    names = []
    for i in ids:
        if i < FIRST_SYMBOL:
            names.append("<bos>" if i == BOS else "<eos>")
        else:
            s = i - FIRST_SYMBOL
            names.append(chr(ord("a") + s) if task.n_symbols <= 26 else str(s))
    return names


# ---- the model ------------------------------------------------------------------------------


@dataclass
class Seq2SeqConfig:
    vocab_size: int = 22  # symbols + BOS + EOS; set from the task
    n_embd: int = 64
    n_hidden: int = 128
    attention: bool = True  # additive attention over encoder states; False: the final state only

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_embd", "n_hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Seq2SeqConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown seq2seq model key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**values)


class AdditiveAttention(nn.Module):
    """Bahdanau attention: score_j = v . tanh(W s + U h_j), weights = softmax over j."""

    def __init__(self, n_hidden: int):
        super().__init__()
        self.W = nn.Linear(n_hidden, n_hidden, bias=False)
        self.U = nn.Linear(n_hidden, n_hidden)
        self.v = nn.Linear(n_hidden, 1, bias=False)

    def keys(self, states: torch.Tensor) -> torch.Tensor:
        """U h_j for every source position: fixed for the whole output, so computed once."""
        return self.U(states)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, states: torch.Tensor):
        """query (B, H), keys and states (B, L, H) -> (context (B, H), weights (B, L))."""
        scores = self.v(torch.tanh(self.W(query)[:, None, :] + keys)).squeeze(-1)
        weights = scores.softmax(dim=-1)
        return torch.einsum("bl,blh->bh", weights, states), weights


class Seq2Seq(nn.Module):
    """The encoder-decoder. Per output step t:
        c_t = context(s_{t-1})                      attention over h_1..h_L, or just h_L
        s_t = GRUCell([embed(y_{t-1}); c_t], s_{t-1})
        logits_t = out([s_t; c_t])
    """

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.config = config
        E, H, V = config.n_embd, config.n_hidden, config.vocab_size
        self.src_embed = nn.Embedding(V, E)
        self.tgt_embed = nn.Embedding(V, E)
        self.encoder = nn.GRU(E, H, batch_first=True)
        self.attention = AdditiveAttention(H) if config.attention else None
        self.decoder = nn.GRUCell(E + H, H)
        self.out = nn.Linear(2 * H, V)

    def encode(self, source: torch.Tensor):
        """source (B, L) -> (every encoder state (B, L, H), the final one (B, H))."""
        states, final = self.encoder(self.src_embed(source))
        return states, final[-1]

    def decode(self, states: torch.Tensor, final: torch.Tensor, inputs: torch.Tensor):
        """Teacher-forced decoding of inputs (B, T) -> (logits (B, T, V), alignment (B, T, L) or None)."""
        keys = self.attention.keys(states) if self.attention is not None else None
        s, logits, alignment = final, [], []
        for t in range(inputs.size(1)):
            s, step_logits, weights = self.step(inputs[:, t], s, states, final, keys)
            logits.append(step_logits)
            alignment.append(weights)
        return torch.stack(logits, dim=1), torch.stack(alignment, dim=1) if keys is not None else None

    def step(self, token: torch.Tensor, s: torch.Tensor, states, final, keys):
        """One decoder step from the previous token (B,) and state s (B, H) -> (s', logits, weights)."""
        if self.attention is not None:
            context, weights = self.attention(s, keys, states)
        else:
            context, weights = final, None  # the fixed-size summary, the same at every step
        s = self.decoder(torch.cat([self.tgt_embed(token), context], dim=-1), s)
        return s, self.out(torch.cat([s, context], dim=-1)), weights

    def forward(self, source: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor | None = None):
        """-> (logits (B, T, V), mean cross-entropy over the target tokens or None)."""
        states, final = self.encode(source)
        logits, _ = self.decode(states, final, inputs)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    @torch.no_grad()
    def greedy(self, source: torch.Tensor, length: int):
        """Decode `length` tokens, each step feeding back the likeliest one
        -> (tokens (B, length), alignment (B, length, L) or None)."""
        states, final = self.encode(source)
        keys = self.attention.keys(states) if self.attention is not None else None
        token = torch.full((source.size(0),), BOS, device=source.device)
        s, tokens, alignment = final, [], []
        for _ in range(length):
            s, logits, weights = self.step(token, s, states, final, keys)
            token = logits.argmax(dim=-1)
            tokens.append(token)
            alignment.append(weights)
        return torch.stack(tokens, dim=1), torch.stack(alignment, dim=1) if keys is not None else None

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


@torch.no_grad()
def exact_match_by_length(model: Seq2Seq, task: TaskConfig, lengths: list[int], n: int, seed: int = 0) -> dict[int, float]:
    """For each input length, the share of n fresh random inputs whose greedy output (with its
    EOS in the right place) is exactly right."""
    model.eval()
    device = next(model.parameters()).device
    accuracy = {}
    for length in lengths:
        generator = torch.Generator().manual_seed(seed * 100_003 + length)
        source, _, target = make_batch(task, length, n, generator)
        output, _ = model.greedy(source.to(device), length + 1)
        accuracy[length] = (output.cpu() == target).all(dim=1).float().mean().item()
    return accuracy


def plot_alignment(weights: torch.Tensor, source: list[str], output: list[str], path: str | Path, title: str) -> Path:
    """weights (T_out, L): row t is where output token t looked in the source; a PNG heat map.
    For reversal the bright cells run along the anti-diagonal; for translate they zigzag."""
    T, L = weights.shape
    fig = Figure(figsize=(max(3.5, 0.3 * L + 1.5), max(3.0, 0.3 * T + 1.2)), layout="compressed")
    ax = fig.subplots()
    image = ax.imshow(weights.float().cpu().numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(L), source, fontsize=8)
    ax.set_yticks(range(T), output, fontsize=8)
    ax.set_xlabel("source token (encoder state)")
    ax.set_ylabel("output token (decoder step)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8, label="attention weight")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing")
        fig.savefig(path, dpi=100)
    return Path(path)
