"""The second retrieval stage measured: recall@10, MRR@10 and ms per query of hybrid search,
with and without reranking and query rewriting by a chat model. One JSON line.

Data: the Harrowby Island set the real-model benchmark answers from (real_model_data/
rag_documents.jsonl, 34 one-paragraph documents), indexed with the default embedder
(all-MiniLM-L6-v2), and one of two question sets, each question with the one document that
answers it: the 20 answerable questions of rag_questions.jsonl (the default; they share their
key words with their documents), or, with --questions rag_paraphrases.jsonl, 20 questions
written in other words than their documents ("soccer side" for "football club"), for
documents the first set does not ask about, mostly. The model (SmolLM2-135M-Instruct by default, a local run made
with `groklm import smollm2-135m-instruct --out DIR`) is the reranker (log p("yes") - log
p("no") of a relevance judgment, backend:local:DIR) and the rewriter. With --cross-encoder DIR
a BERT cross-encoder is measured as well.

`ratio` is the reranked MRR@10 over the first stage's (hybrid); `rewrite_ratio` the same
for rewriting. Every row runs the whole retrieval of each query (embedding, search, model
calls) one query at a time, so ms_per_query is what a user waits.

    OMP_NUM_THREADS=1 python benchmarks/rerank.py --model /tmp/smol [--depth 20] [--questions rag_paraphrases.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from groklm.apps.backends import load_backend  # noqa: E402
from groklm.apps.rag.embed import Embedder  # noqa: E402
from groklm.apps.rag.evaluate import evaluate, read_queries  # noqa: E402
from groklm.apps.rag.index import Index  # noqa: E402
from groklm.apps.rag.load import Document  # noqa: E402
from groklm.apps.rag.rerank import BackendReranker, Rewriter, load_reranker  # noqa: E402
from groklm.jsonl import read_jsonl  # noqa: E402

DATA = Path(__file__).resolve().parent / "real_model_data"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="the chat model's run directory (groklm import ... --out DIR)")
    parser.add_argument("--depth", type=int, default=20, help="first-stage hits the reranker re-scores (default 20)")
    parser.add_argument("--variants", type=int, default=0, help="rewritten variants besides the rewrite (default 0)")
    parser.add_argument("--cross-encoder", default=None, metavar="DIR", help="also a BERT cross-encoder reranker")
    parser.add_argument("--limit", type=int, default=None, help="the first N questions only")
    parser.add_argument("--questions", default="rag_questions.jsonl", help="a questions file in real_model_data/")
    args = parser.parse_args()

    documents = read_jsonl(DATA / "rag_documents.jsonl")
    questions = [q for q in read_jsonl(DATA / args.questions) if q.get("source")][: args.limit]
    backend = load_backend(f"local:{args.model}")
    reranker, rewrite = BackendReranker(backend), Rewriter(backend, args.variants)
    with tempfile.TemporaryDirectory() as folder:
        index = Index.create(Path(folder) / "idx", Embedder.default())
        index.upsert([Document(d["source"], d["text"], "text", {}) for d in documents])
        queries_file = Path(folder) / "queries.jsonl"
        queries_file.write_text("".join(json.dumps({"query": q["question"], "relevant": [q["source"]]}) + "\n"
                                        for q in questions))
        queries = read_queries(queries_file, index)
        start = time.perf_counter()
        log(f"{len(queries)} questions over {len(index)} chunks; first stage and rerank (depth {args.depth})...")
        rows = evaluate(index, queries, 10, reranker=reranker, rerank_depth=args.depth, latency=True)
        log(json.dumps(rows))
        log("rewrite...")
        second_stage = {"modes": (), "latency": True}  # (each call measures "hybrid" again: kept from the first)
        rows |= {name: row for name, row in evaluate(index, queries, 10, rewrite=rewrite, **second_stage).items()
                 if "+" in name}
        if args.cross_encoder:
            cross = load_reranker(f"cross-encoder:{args.cross_encoder}")
            rows["hybrid+cross-encoder"] = evaluate(index, queries, 10, reranker=cross, rerank_depth=args.depth,
                                                    **second_stage)["hybrid+rerank"]
        index.db.close()
    base = rows["hybrid"]
    print(json.dumps({
        "benchmark": "rerank",
        "data": f"real_model_data rag_documents.jsonl (34 documents) + {args.questions}, judged by document",
        "embedder": "all-MiniLM-L6-v2",
        "model": Path(args.model).name,
        "reranker": reranker.name,
        "rerank_depth": args.depth,
        "rewrite_variants": args.variants,
        "queries": len(queries),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ratio": round(rows["hybrid+rerank"]["mrr@10"] / base["mrr@10"], 3),
        "rewrite_ratio": round(rows["hybrid+rewrite"]["mrr@10"] / base["mrr@10"], 3),
        "added_ms_per_query": {name: round(row["ms_per_query"] - base["ms_per_query"], 1)
                               for name, row in rows.items() if name.startswith("hybrid+")},
        "rows": rows,
        "wall_s": round(time.perf_counter() - start, 1),
    }))


if __name__ == "__main__":
    main()
