"""Retrieval-augmented generation: documents in, grounded and cited answers out.

    load.py      files -> Documents (.txt .md .html .pdf, folders), unreadable ones listed
    chunk.py     Documents -> Chunks (token-aware, heading-aware, overlapping, stable ids)
    embed.py     texts -> unit vectors (our Encoder, or an OpenAI-compatible API)
    vectors.py   exact and approximate (FAISS) nearest-neighbour search
    index.py     the persistent index (SQLite + NumPy), incremental updates
    retrieve.py  dense, BM25 and hybrid (reciprocal rank fusion) search, filters
    evaluate.py  recall@k, MRR@10, nDCG@10
    grounded.py  answer(): prompt with passages, token budget, citations, "not found"
    commands.py  `groklm rag index | search | eval | ask | remove`

Names are imported on first use, so the CLI stays fast to start.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "Document": "groklm.apps.rag.load",
    "load_paths": "groklm.apps.rag.load",
    "Chunk": "groklm.apps.rag.chunk",
    "Chunker": "groklm.apps.rag.chunk",
    "Embedder": "groklm.apps.rag.embed",
    "ApiEmbedder": "groklm.apps.rag.embed",
    "load_embedder": "groklm.apps.rag.embed",
    "Index": "groklm.apps.rag.index",
    "Hit": "groklm.apps.rag.retrieve",
    "search": "groklm.apps.rag.retrieve",
    "Answer": "groklm.apps.rag.grounded",
    "answer": "groklm.apps.rag.grounded",
    "build_messages": "groklm.apps.rag.grounded",
}
__all__ = list(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'groklm.apps.rag' has no attribute {name!r}")
