"""Retrieval-augmented generation: documents in, grounded and cited answers out.

    load.py      files -> Documents (.txt .md .html .pdf, folders), unreadable ones listed
    chunk.py     Documents -> Chunks (token-aware, heading-aware, overlapping, stable ids)
    embed.py     texts -> unit vectors (our Encoder, or an OpenAI-compatible API)
    vectors.py   exact and approximate (FAISS) nearest-neighbour search
    index.py     the persistent index (SQLite + NumPy), incremental updates
    retrieve.py  dense, BM25 and hybrid (reciprocal rank fusion) search, filters
    evaluate.py  recall@k, MRR@10, nDCG@10
    grounded.py  answer(): prompt with passages, token budget, citations, "not found"

The commands (`groklm rag index | search | eval | ask | remove`) are in groklm/cli/rag.py.
"""

from __future__ import annotations

from groklm.apps.rag.chunk import Chunk, Chunker
from groklm.apps.rag.embed import ApiEmbedder, Embedder, load_embedder
from groklm.apps.rag.grounded import Answer, answer, build_messages
from groklm.apps.rag.index import Index
from groklm.apps.rag.load import Document, load_paths
from groklm.apps.rag.retrieve import Hit, search

__all__ = ["Document", "load_paths", "Chunk", "Chunker", "Embedder", "ApiEmbedder", "load_embedder", "Index", "Hit",
           "search", "Answer", "answer", "build_messages"]
