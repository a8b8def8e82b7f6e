"""From a catalog to data: documentation pages, their index, requests, and training chats.

The recipe is Gorilla's: a model learns to call APIs by reading their documentation, so every
training chat shows it the pages a retriever found for the request (as tools, in the system
message, exactly as `groklm serve` and the backends describe tools) and ends in the one right
call. Three choices keep what it learns honest:

  * Splits. A request's call decides its split (a hash of the API and its arguments, as the
    synthetic tasks split problems), so no test call is ever trained on in any wording; and the
    catalog's held-out APIs appear in no training chat at all. Their test requests measure
    whether the model reads documentation or recalls names.
  * What the retriever really returns. Pages come from the same index the evaluation searches
    (restricted, in training, to the APIs not held out), in a shuffled order, so the model must
    find the right page rather than take the first. When the retriever missed the right API,
    the chat ends in ABSTAIN instead of a call: a model that names an API it was not shown is
    hallucinating, and that is the failure measured.
  * A share without any pages (`no_docs`), as Gorilla's zero-shot setting: what the model can do
    from memory alone, measured beside what retrieval adds.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from groklm.apps.api_calls.catalog import Api, Catalog
from groklm.apps.rag.index import Index
from groklm.apps.rag.load import Document
from groklm.apps.rag.retrieve import search
from groklm.errors import ConfigError, DataError
from groklm.infer.tool_calls import format_call, to_chatml
from groklm.jsonl import read_jsonl, write_jsonl
from groklm.tasks.base import split_of

ABSTAIN = "None of these APIs can do that."
SPLITS = ("train", "test", "heldout")  # seen APIs' training calls, their test calls, held-out APIs' calls
SEEN, HELD_OUT = "seen", "held_out"  # a page's metadata "split"


@dataclass(frozen=True)
class Example:
    request: str
    api: str
    arguments: dict

    def call(self) -> str:
        return format_call(self.api, self.arguments)


def call_key(api: Api, arguments: dict) -> str:
    return api.name + json.dumps(api.canonical(arguments), sort_keys=True)


def examples(catalog: Catalog, split: str, n: int, seed: int = 0) -> list[Example]:
    """n requests of `split`, the APIs taken in turn so each gets its share. Test requests are
    distinct; training ones may repeat once an API's are used up (a small API has few)."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
    apis = catalog.unseen if split == "heldout" else catalog.seen
    if not apis:
        raise DataError("the catalog holds no APIs out, so there is no heldout split")
    rng = random.Random(f"api_calls/{split}/{seed}")
    out, requests = [], set()
    for i in range(n):
        api = apis[i % len(apis)]
        for _ in range(200):
            request, arguments = api.draw(rng)
            # held-out APIs are never trained on: every call of theirs is a test call
            fits = split == "heldout" or split_of("api_calls", call_key(api, arguments)) == split
            if fits and (split == "train" or request not in requests):
                requests.add(request)
                out.append(Example(request, api.name, arguments))
                break
        else:
            raise DataError(f"API {api.name!r} has too few distinct {split} requests for n={n}; "
                            "give it more values or templates")
    return out


def write_examples(path: Path, items: list[Example]) -> None:
    write_jsonl(path, (asdict(e) for e in items))


def read_examples(path: Path) -> list[Example]:
    try:
        return [Example(r["request"], r["api"], r["arguments"]) for r in read_jsonl(path)]
    except (KeyError, TypeError):
        raise DataError(f"{path}: every line must be {{\"request\", \"api\", \"arguments\"}}") from None


# ---- documentation and its index ----------------------------------------------------------------


def build_index(catalog: Catalog, docs_dir: Path, index_dir: Path, embedder) -> Index:
    """One documentation page per API under docs_dir (NAME.md), indexed at index_dir."""
    docs_dir.mkdir(parents=True, exist_ok=True)
    documents = []
    for api in catalog.apis:
        page, text = docs_dir / f"{api.name}.md", api.doc()
        page.write_text(text)
        split = HELD_OUT if api.name in catalog.held_out else SEEN
        documents.append(Document(str(page.resolve()), text, "markdown", {"api": api.name, "split": split}))
    index = Index.create(index_dir, embedder)
    index.upsert(documents)
    return index


class Retriever:
    """The names of the APIs whose pages best match a request (hybrid BM25 + dense search)."""

    def __init__(self, index: Index, catalog: Catalog, k: int = 3, mode: str = "hybrid"):
        if k < 1:
            raise ConfigError(f"k (pages per request) must be >= 1, got {k}")
        self.index, self.catalog, self.k, self.mode = index, catalog, k, mode

    def __call__(self, request: str, seen_only: bool = False) -> list[str]:
        filters = {"split": SEEN} if seen_only else None
        names = []
        for hit in search(self.index, request, k=self.k * 3, mode=self.mode, filters=filters):
            name = hit.chunk.metadata.get("api")
            if self.catalog.get(name) is not None and name not in names:
                names.append(name)  # a long page may be several chunks: one API once
        return names[: self.k]


# ---- training chats ----------------------------------------------------------------------------


def prompt(catalog: Catalog, request: str, pages: list[str]) -> list[dict]:
    """The ChatML messages a backend renders for `request` with these APIs offered as tools."""
    return to_chatml([{"role": "user", "content": request}], [catalog.get(name).spec() for name in pages])


def training_chats(catalog: Catalog, items: list[Example], retriever: Callable[..., list[str]], no_docs: float = 0.3,
                   seed: int = 0, progress: bool = False) -> tuple[list[dict], dict]:
    """SFT records ({"messages": ChatML}) and counts: with pages, without, abstaining.
    `retriever(request, seen_only=True)` names the pages: a Retriever, or any such function."""
    if not 0 <= no_docs <= 1:
        raise ConfigError(f"no_docs is a share of the chats, in [0, 1]; got {no_docs}")
    if held := [e.api for e in items if e.api in catalog.held_out]:
        raise DataError(f"training chats may not call held-out APIs (got {held[0]!r})")
    rng = random.Random(f"api_calls/chats/{seed}")
    records, counts = [], {"with_docs": 0, "without_docs": 0, "abstain": 0}
    for example in tqdm(items, desc="training chats", unit="chat", disable=not progress, file=sys.stderr):
        pages = [] if rng.random() < no_docs else retriever(example.request, seen_only=True)
        rng.shuffle(pages)
        reply = example.call() if not pages or example.api in pages else ABSTAIN
        counts["with_docs" if pages else "without_docs"] += 1
        counts["abstain"] += reply == ABSTAIN
        messages = [*prompt(catalog, example.request, pages), {"role": "assistant", "content": reply}]
        records.append({"messages": messages})
    return records, counts
