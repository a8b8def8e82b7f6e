"""A second retrieval stage: rerank the first stage's best few, and rewrite the query.

The first stage (retrieve.py) must be fast over every chunk, so it compares a query with
chunks it embedded or indexed long before, one side at a time. A reranker reads the query
and one passage *together*, which is far more exact and far slower, so it is given only the
first stage's top `depth` (30 by default) and puts them in a better order:

  * `CrossEncoderReranker`: a BERT cross-encoder (a Hugging Face BertForSequenceClassification
    directory, such as the ms-marco MiniLM rerankers): "[CLS] query [SEP] passage [SEP]" through
    our Encoder, then the checkpoint's pooler (tanh of a linear map of [CLS]) and classifier.
    Its logit is the score.
  * `BackendReranker`: any chat model, asked "does the passage answer the question?". With
    the "score" capability (local, hf) the score is log p("Yes") - log p("No"), a graded
    judgment from one forward pass; otherwise the model's reply is parsed, yes or no.

Query rewriting works on the other end: a model turns a conversational question into a
search query (and, optionally, a few differently worded variants). The original query is
always searched too and the rankings are fused by reciprocal rank fusion (retrieve.py): a
small model's rewrite can drop the one rare word that found the passage.

    search(index, query, k=5, reranker=load_reranker("cross-encoder:DIR"), rerank_depth=30)
    search(index, query, k=5, rewrite=Rewriter(load_backend("local:runs/chat"), variants=2))
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn

from groklm.apps.backends import Backend, BackendError, load_backend
from groklm.apps.rag.embed import pad
from groklm.errors import CheckpointError, ConfigError
from groklm.model.encoder import Encoder, read_hf_weights

RERANK_DEPTH = 30  # first-stage hits a reranker re-scores; each costs a forward pass
# Question first, then the passage, and capitalised answers: how chat models are used to
# seeing it (on SmolLM2-135M this order ranked the answering passage higher than the reverse).
JUDGE = "Question: {query}\n\nPassage: {passage}\n\nDoes the passage answer the question? Answer Yes or No."
ANSWERS = ("Yes", "No")
# Two worked examples: small models asked only in words tend to answer the question instead.
REWRITE = ("Turn the question into a short keyword search query. Keep every name, number and rare word.\n\n"
           "Question: What time does the last bus leave Glenmore station on Sundays?\n"
           "Query: last bus Glenmore station Sunday times\n\n"
           "Question: Who wrote the town's anthem?\nQuery: town anthem writer composer\n\n"
           "Question: {query}\nQuery:")
VARIANTS = ("Write {n} different short search queries, one per line, that would find documents answering "
            "this question. Use other words than the question does. Reply with the queries alone.\n\nQuestion: {query}")
LIST_MARK = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s*")  # "1. ", "- ": a model numbering its lines


class CrossEncoderReranker:
    """A BERT cross-encoder: relevance = the classifier's logit for "query [SEP] passage"."""

    def __init__(self, encoder: Encoder, pooler: nn.Linear, classifier: nn.Linear, max_length: int,
                 name: str = "cross-encoder", batch_size: int = 16):
        if encoder.tokenizer is None:
            raise ConfigError("the encoder has no tokenizer (load it with Encoder.from_hf)")
        if classifier.out_features not in (1, 2):
            raise ConfigError(f"a cross-encoder has 1 or 2 labels (relevance, or not/yes), this one has "
                              f"{classifier.out_features}")
        self.encoder, self.tokenizer = encoder, encoder.tokenizer
        self.pooler, self.classifier = pooler, classifier
        self.max_length, self.name, self.batch_size = max_length, name, batch_size

    @classmethod
    def from_hf(cls, directory: str | Path, device: str = "cpu", batch_size: int = 16) -> CrossEncoderReranker:
        """A BertForSequenceClassification directory (config.json, weights, tokenizer.json)."""
        directory = Path(directory)
        encoder = Encoder.from_hf(directory, device=device)
        # The encoder's loader leaves the pooler and task head out; read them here (the weights
        # file is read a second time: simpler than a second, head-aware copy of the loader).
        weights = {name.removeprefix("bert."): t.float() for name, t in read_hf_weights(directory).items()}
        missing = [n for n in ("pooler.dense.weight", "pooler.dense.bias", "classifier.weight", "classifier.bias")
                   if n not in weights]
        if missing:
            raise CheckpointError(f"{directory} is not a cross-encoder (BertForSequenceClassification): "
                                  f"it has no {', '.join(missing)}")
        pooler, classifier = (linear(weights, name) for name in ("pooler.dense", "classifier"))
        max_length = encoder.config.max_positions
        tokenizer_config = directory / "tokenizer_config.json"
        if tokenizer_config.is_file():  # sentence-transformers' CrossEncoder reads at most this many
            max_length = min(max_length, json.loads(tokenizer_config.read_text()).get("model_max_length") or max_length)
        return cls(encoder, pooler.to(device), classifier.to(device), max_length,
                   f"cross-encoder:{directory.resolve().name}", batch_size)

    def pair_ids(self, query: str, passage: str) -> tuple[list[int], list[int]]:
        """[CLS] query [SEP] passage [SEP] and its segments (0 for the query part, 1 for the
        passage), cut to max_length by dropping the last token of the longer text first, as
        Hugging Face's "longest_first" truncation does."""
        q, p = self.tokenizer.encode(query), self.tokenizer.encode(passage)
        while len(q) + len(p) + 3 > self.max_length:
            (q if len(q) > len(p) else p).pop()
        cls_, sep = self.tokenizer.cls_id, self.tokenizer.sep_id
        return [cls_, *q, sep, *p, sep], [0] * (len(q) + 2) + [1] * (len(p) + 1)

    def logits(self, query: str, passages: list[str]) -> torch.Tensor:
        """(len(passages), labels) classifier logits."""
        pairs = [self.pair_ids(query, passage) for passage in passages]
        out = []
        device = self.classifier.weight.device
        with torch.inference_mode():
            for start in range(0, len(pairs), self.batch_size):
                batch = pairs[start : start + self.batch_size]
                ids, mask = pad([ids for ids, _ in batch], self.tokenizer.pad_id, device)
                types, _ = pad([types for _, types in batch], 0, device)
                hidden = self.encoder(ids, attention_mask=mask, type_ids=types)
                out.append(self.classifier(torch.tanh(self.pooler(hidden[:, 0]))))
        return torch.cat(out) if out else torch.zeros(0, self.classifier.out_features)

    def scores(self, query: str, passages: list[str]) -> list[float]:
        logits = self.logits(query, passages).float()
        # Two labels (not relevant, relevant): the log-odds of relevant, on the same scale as one logit.
        return (logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]).tolist()


def linear(weights: dict[str, torch.Tensor], name: str) -> nn.Linear:
    weight = weights[f"{name}.weight"]
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    layer.load_state_dict({"weight": weight, "bias": weights[f"{name}.bias"]})
    return layer.eval()


class BackendReranker:
    """A chat model as a relevance judge: log p("Yes") - log p("No") where it can score replies,
    else its answer (yes: 1, no: 0; ties keep the first stage's order)."""

    def __init__(self, backend: Backend):
        self.backend, self.name = backend, f"backend:{backend.name}"

    def scores(self, query: str, passages: list[str]) -> list[float]:
        return [self.score(query, passage) for passage in passages]

    def score(self, query: str, passage: str) -> float:
        messages = [{"role": "user", "content": JUDGE.format(passage=passage, query=query)}]
        if "score" in self.backend.capabilities:
            yes, no = self.backend.score(messages, list(ANSWERS))
            return yes - no
        reply = self.backend.chat(messages, max_tokens=4).text
        word = (re.findall(r"[a-z]+", reply.lower()) or [""])[0]
        yes, no = (answer.lower() for answer in ANSWERS)
        if word not in (yes, no):
            raise BackendError(f"{self.backend.name} cannot judge relevance: asked for yes or no, it replied "
                               f"{reply[:80]!r}, and it cannot score replies; use a local or hf backend")
        return 1.0 if word == yes else 0.0


def rerank(query: str, hits: list, reranker, top_n: int | None = None) -> list:
    """`hits` re-scored by `reranker` (hit.score becomes its score), best first, the top_n of
    them (all when None). Equal scores keep the first stage's order."""
    scores = reranker.scores(query, [hit.chunk.text for hit in hits])
    order = sorted(range(len(hits)), key=lambda i: -scores[i])  # sorted() is stable
    return [replace(hits[i], score=float(scores[i])) for i in order][:top_n]


def rewrite_query(backend: Backend, query: str, variants: int = 0) -> list[str]:
    """A standalone search query for `query`, then up to `variants` differently worded ones
    (fewer if the model writes fewer; duplicates and empty lines dropped)."""
    reply = backend.chat([{"role": "user", "content": REWRITE.format(query=query)}], max_tokens=32, stop=["\n"]).text
    queries = [clean_query(reply)]
    if variants:
        reply = backend.chat([{"role": "user", "content": VARIANTS.format(n=variants, query=query)}],
                             max_tokens=32 * variants).text
        queries += [clean_query(line) for line in reply.splitlines()]
    unique = [q for q in dict.fromkeys(queries) if q]
    return unique[: 1 + variants]


def clean_query(text: str) -> str:
    """One line of a model's reply as a query: list marks, quotes and a "Query:" label removed."""
    text = LIST_MARK.sub("", text.strip().splitlines()[0] if text.strip() else "")
    text = re.sub(r"^(?:search )?query:\s*", "", text, flags=re.IGNORECASE)
    return text.strip().strip("\"'`").strip()


class Rewriter:
    """rewrite_query with its backend and number of variants bound: query -> queries."""

    def __init__(self, backend: Backend, variants: int = 0):
        if variants < 0:
            raise ConfigError(f"variants must be >= 0, got {variants}")
        self.backend, self.variants = backend, variants

    def __call__(self, query: str) -> list[str]:
        return rewrite_query(self.backend, query, self.variants)


def load_reranker(spec: str, device: str = "cpu"):
    """`cross-encoder:DIR` (a BertForSequenceClassification directory) or `backend:SPEC`
    (a backend spec, e.g. backend:local:runs/chat) -> a reranker."""
    kind, _, rest = spec.partition(":")
    if kind == "cross-encoder" and rest:
        return CrossEncoderReranker.from_hf(rest, device)
    if kind == "backend" and rest:
        return BackendReranker(load_backend(rest))
    raise ConfigError(f"unknown reranker {spec!r}: use cross-encoder:DIR or backend:BACKEND_SPEC "
                      "(backend:local:RUN_DIR, backend:hf:DIR, backend:openai:BASE_URL#MODEL)")
