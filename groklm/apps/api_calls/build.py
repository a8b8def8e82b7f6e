"""`groklm apis make`: a catalog in, a directory of everything the experiment needs out.

    DIR/apis.json       the catalog (which APIs are held out included): edit it, or bring your own
    DIR/docs/NAME.md    one documentation page per API
    DIR/index/          a groklm RAG index of the pages (`groklm rag search DIR/index "..."` works)
    DIR/train.jsonl     SFT chats: request, retrieved pages as tools, the call (for `groklm sft`)
    DIR/test.jsonl      seen APIs' test requests: {"request", "api", "arguments"}
    DIR/heldout.jsonl   held-out APIs' requests, same shape (when the catalog holds any out)
    DIR/settings.json   how it was made (k, shares, counts); written last: its presence means
                        the directory is whole, and `groklm apis eval` refuses one without it
"""

from __future__ import annotations

import shutil
from pathlib import Path

from groklm.apps.api_calls.catalog import Catalog, save_catalog
from groklm.apps.api_calls.dataset import Retriever, build_index, examples, training_chats, write_examples
from groklm.errors import ConfigError, DataError
from groklm.jsonl import write_jsonl
from groklm.rundir import read_json, write_json

SETTINGS_FILE = "settings.json"


def make_api_data(catalog: Catalog, out: str | Path, embedder, train: int = 2000, test: int = 100,
                  heldout: int = 100, k: int = 3, no_docs: float = 0.3, seed: int = 0, force: bool = False,
                  progress: bool = False) -> dict:
    """Write DIR (see the module docstring); returns the settings."""
    out = Path(out)
    if min(train, test, heldout) < 1:
        raise ConfigError(f"train, test and heldout counts must be >= 1, got {train}, {test}, {heldout}")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise ConfigError(f"{out} is not empty; choose another --out or pass --force to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    save_catalog(catalog, out / "apis.json")
    index = build_index(catalog, out / "docs", out / "index", embedder)
    retriever = Retriever(index, catalog, k)
    train_items = examples(catalog, "train", train, seed)
    chats, counts = training_chats(catalog, train_items, retriever, no_docs, seed, progress)
    write_jsonl(out / "train.jsonl", chats)
    write_examples(out / "test.jsonl", examples(catalog, "test", test, seed))
    if catalog.held_out:  # a catalog of your own may hold nothing out: then there is no such split
        write_examples(out / "heldout.jsonl", examples(catalog, "heldout", heldout, seed))
    heldout = heldout if catalog.held_out else 0
    settings = {"apis": len(catalog.apis), "held_out": sorted(catalog.held_out), "k": k, "no_docs": no_docs,
                "seed": seed, "train": train, "test": test, "heldout": heldout, "chats": counts}
    write_json(out / SETTINGS_FILE, settings)
    return settings


def read_settings(directory: str | Path) -> dict:
    path = Path(directory) / SETTINGS_FILE
    if not path.is_file():
        raise DataError(f"{directory} is not a whole `groklm apis make` directory (no {SETTINGS_FILE}); make it again")
    return read_json(path)
