"""`groklm rag`: build a document index, search it, measure it, answer from it.

    groklm rag index docs/ notes.pdf --out idx          # create, or update incrementally
    groklm rag search idx "how do I resume training?" --k 5 --mode hybrid --json
    groklm rag eval idx --queries queries.jsonl --json  # dense vs bm25 vs hybrid
    groklm rag ask idx "how do I resume training?" --backend local:runs/chat
    groklm rag eval idx --queries q.jsonl --rerank backend:local:runs/chat --rewrite local:runs/chat
    groklm rag remove idx docs/old.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from groklm.errors import ConfigError, DataError

# The --mode choices, as groklm.apps.rag.retrieve.MODES (not imported: numpy);
# tests/test_cli_light.py checks that they agree.
MODES = ("dense", "bm25", "hybrid")
RERANK_DEPTH = 30  # as groklm.apps.rag.rerank.RERANK_DEPTH (not imported: torch); tests/test_rag_rerank.py checks
MAX_FILE_MB = 10.0  # as groklm.apps.rag.load.MAX_FILE_MB (not imported: pypdf); tests/test_hostile_files.py checks


def register(subparsers) -> None:
    rag = subparsers.add_parser("rag", help="retrieval-augmented generation: index documents, search, answer with citations")
    actions = rag.add_subparsers(dest="rag_command", metavar="ACTION", required=True)

    index = actions.add_parser(
        "index",
        help="index files and folders (.txt .md .html .pdf); re-running updates changed files only",
        description="Load, chunk and embed PATHs into the index INDEX (created if missing). Files already "
        "in the index are brought up to date: only new or changed chunks are embedded.",
    )
    index.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    index.add_argument("--out", required=True, type=Path, metavar="INDEX", help="index folder")
    index.add_argument("--glob", default="**/*", help="which files to take from folders (default **/*)")
    index.add_argument("--embedder", default=None, metavar="SPEC",
                       help="default (all-MiniLM-L6-v2, offline), hf:DIR (a BERT-family model) or "
                       "openai:BASE_URL#MODEL (key from $OPENAI_API_KEY); only when creating")
    index.add_argument("--chunk-tokens", type=int, default=None, help="chunk size in tokens (default 200); only when creating")
    index.add_argument("--overlap", type=int, default=40, help="tokens shared by neighbouring chunks (default 40); only when creating")
    index.add_argument("--max-file-mb", type=float, default=MAX_FILE_MB, metavar="MB",
                       help=f"skip larger files, saying so (default {MAX_FILE_MB:g}: a MB of text is ~2,000 chunks, "
                       "minutes of embedding on a CPU)")
    index.add_argument("--prune", action="store_true", help="also remove indexed files under PATHs that no longer exist")
    index.add_argument("--approximate", action="store_true", help="also build the approximate-search index (FAISS)")
    index.add_argument("--device", default="cpu")
    index.set_defaults(func=run_index)

    search = actions.add_parser("search", help="the chunks that best match a query",
                                description="Search INDEX; each hit shows its source file, chunk id and score.")
    search.add_argument("index", type=Path, metavar="INDEX")
    search.add_argument("query")
    add_search_options(search)
    search.add_argument("--json", action="store_true", help="one JSON object per hit, with its text and metadata")
    search.set_defaults(func=run_search)

    evaluate = actions.add_parser(
        "eval",
        help="recall@k, MRR@10 and nDCG@10 of dense, bm25 and hybrid retrieval",
        description='QUERIES is JSONL: {"query": "...", "relevant": [chunk ids or files]} per line. '
        "With --rerank and/or --rewrite, hybrid retrieval is measured again with each, with the time per query.",
    )
    evaluate.add_argument("index", type=Path, metavar="INDEX")
    evaluate.add_argument("--queries", required=True, type=Path, metavar="FILE.jsonl")
    evaluate.add_argument("--k", type=int, default=10, help="k of recall@k (default 10)")
    add_stage_options(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--device", default="cpu")
    evaluate.set_defaults(func=run_eval)

    ask = actions.add_parser(
        "ask",
        help="answer a question from the index, with numbered citations",
        description="Retrieve passages for QUESTION and have the model in --backend answer from them only. "
        "Says 'Not found in the documents.' when nothing retrieved is similar enough.",
    )
    ask.add_argument("index", type=Path, metavar="INDEX")
    ask.add_argument("question")
    ask.add_argument("--backend", required=True, metavar="SPEC", help="local:RUN_DIR, hf:CHECKPOINT_DIR or openai:BASE_URL#MODEL")
    add_search_options(ask)
    ask.add_argument("--min-similarity", type=float, default=0.3, help="cosine below which a passage counts as unrelated (default 0.3)")
    ask.add_argument("--budget", type=int, default=1500, help="tokens of passages in the prompt at most (default 1500)")
    ask.add_argument("--max-tokens", type=int, default=256, help="length of the answer at most (default 256)")
    ask.add_argument("--json", action="store_true", help="print one JSON object (answer, sources, citations)")
    ask.set_defaults(func=run_ask)

    remove = actions.add_parser("remove", help="remove files from the index")
    remove.add_argument("index", type=Path, metavar="INDEX")
    remove.add_argument("paths", nargs="+", metavar="PATH", help="indexed files (as paths; they need not exist any more)")
    remove.set_defaults(func=run_remove)


def add_search_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--k", type=int, default=5, help="number of chunks (default 5)")
    parser.add_argument("--mode", choices=MODES, default="hybrid", help="dense (meaning), bm25 (words) or hybrid (both, default)")
    parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="keep chunks whose metadata KEY equals VALUE (page=3, headings=Install, format=pdf), "
                        "or source=GLOB; repeat to combine")
    parser.add_argument("--approximate", action="store_true", help="approximate dense search (FAISS IVF): for millions of chunks")
    add_stage_options(parser)
    parser.add_argument("--device", default="cpu")


def add_stage_options(parser: argparse.ArgumentParser) -> None:
    """The second stage of retrieval (groklm.apps.rag.rerank)."""
    parser.add_argument("--rerank", metavar="SPEC", default=None,
                        help="re-score the first stage's top hits: cross-encoder:DIR (a BERT cross-encoder) or "
                        "backend:BACKEND_SPEC (a chat model judging yes/no, e.g. backend:local:RUN_DIR)")
    parser.add_argument("--rerank-depth", type=int, default=RERANK_DEPTH, metavar="N",
                        help=f"how many first-stage hits --rerank re-scores (default {RERANK_DEPTH})")
    parser.add_argument("--rewrite", metavar="BACKEND", default=None,
                        help="have this model rewrite the query for search (local:RUN_DIR, hf:DIR, openai:URL#MODEL); "
                        "its queries and the original are fused")
    parser.add_argument("--rewrite-variants", type=int, default=0, metavar="N",
                        help="with --rewrite, also N differently worded queries (default 0)")


def stage_options(args: argparse.Namespace) -> dict:
    """search()'s rewrite, reranker and rerank_depth from the command line."""
    from groklm.apps.backends import load_backend
    from groklm.apps.rag.rerank import Rewriter, load_reranker

    if args.rerank_depth < 1:
        raise ConfigError(f"--rerank-depth must be >= 1, got {args.rerank_depth}")
    if args.rewrite_variants and not args.rewrite:
        raise ConfigError("--rewrite-variants needs --rewrite BACKEND")
    return {"rewrite": Rewriter(load_backend(args.rewrite), args.rewrite_variants) if args.rewrite else None,
            "reranker": load_reranker(args.rerank, args.device) if args.rerank else None,
            "rerank_depth": args.rerank_depth}


def parse_filters(items: list[str]) -> dict:
    filters = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--filter {item!r}: expected KEY=VALUE")
        try:
            filters[key] = json.loads(value) if key != "source" else value  # page=3 is the number 3
        except json.JSONDecodeError:
            filters[key] = value
    return filters


def open_index(path: Path, device: str):
    from groklm.apps.rag.index import Index

    return Index.open(path, device=device)


def run_index(args: argparse.Namespace) -> None:
    from groklm.apps.rag.embed import load_embedder
    from groklm.apps.rag.index import DB_FILE, Index
    from groklm.apps.rag.load import load_paths

    if args.max_file_mb <= 0:
        raise ConfigError(f"--max-file-mb must be > 0, got {args.max_file_mb:g}")
    # Files first: what cannot be read is said before minutes of embedding, and when nothing
    # can be, no index (or embedder) is made for nothing.
    loaded = load_paths(args.paths, args.glob, args.max_file_mb, progress=True)
    for skipped in loaded.skipped:
        print(f"skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
    if not loaded.documents and loaded.skipped and not args.prune:
        raise DataError("nothing to index: every file was skipped (the reasons are above)")
    if (args.out / DB_FILE).exists():
        if args.embedder or args.chunk_tokens:
            print("note: --embedder and --chunk-tokens apply only when creating an index; using the index's own", file=sys.stderr)
        index = open_index(args.out, args.device)
    else:
        embedder = load_embedder(args.embedder or "default", device=args.device)
        index = Index.create(args.out, embedder, args.chunk_tokens, args.overlap)
    changes = index.upsert(loaded.documents, progress=True)
    print(f"{args.out}: {changes.sources} files, {changes.added} chunks added, {changes.removed} removed, "
          f"{changes.unchanged} unchanged; {len(index)} chunks in all")
    if args.prune:
        roots = [str(Path(p).resolve()) for p in args.paths]
        gone = [s for s in index.sources() if any(s == r or s.startswith(r + "/") for r in roots) and not Path(s).exists()]
        if gone:
            pruned = index.delete_sources(gone)
            print(f"pruned {len(gone)} files that no longer exist ({pruned.removed} chunks)")
    if args.approximate:
        index.approximate  # noqa: B018 (built and saved on first access)
        print(f"approximate index built ({index.approximate.index.nlist} lists, n_probe {index.approximate.n_probe})")


def run_search(args: argparse.Namespace) -> None:
    from groklm.apps.rag.retrieve import search

    stages = stage_options(args)
    index = open_index(args.index, args.device)
    hits = search(index, args.query, args.k, args.mode, parse_filters(args.filter), args.approximate, **stages)
    for rank, hit in enumerate(hits, start=1):
        if args.json:
            print(json.dumps({"rank": rank, **hit.to_dict()}, ensure_ascii=False))
            continue
        page = hit.chunk.metadata.get("page")
        where = hit.chunk.source + (f" (page {page})" if page else "")
        preview = " ".join(hit.chunk.text.split())[:100]
        print(f"{rank}. {where}  chunk {hit.chunk.id}  score {hit.score:.4f}\n   {preview}")
    if not hits and not args.json:
        print("no matches")


def run_eval(args: argparse.Namespace) -> None:
    from groklm.apps.rag.evaluate import absent_entries, evaluate, read_queries

    stages = stage_options(args)
    index = open_index(args.index, args.device)
    queries = read_queries(args.queries, index)
    results = evaluate(index, queries, args.k, latency=True, **stages)
    absent = absent_entries(queries)
    if args.json:
        print(json.dumps({"queries": len(queries), "chunks": len(index), "absent": len(absent), **results}))
        return
    if absent:
        shown = ", ".join(absent[:5]) + (", ..." if len(absent) > 5 else "")
        print(f"note: {len(absent)} relevant document(s) are not in the index and count as misses: {shown}",
              file=sys.stderr)
    names = list(next(iter(results.values())))
    width = max(map(len, results)) + 2
    print(f"{len(queries)} queries over {len(index)} chunks\n{'mode':{width}}" + "".join(f"{n:>13}" for n in names))
    for mode, metrics in results.items():
        print(f"{mode:{width}}" + "".join(f"{metrics[n]:>13.4f}" for n in names))


def run_ask(args: argparse.Namespace) -> None:
    from groklm.apps.backends import load_backend
    from groklm.apps.rag.grounded import answer

    stages = stage_options(args)
    index = open_index(args.index, args.device)
    backend = load_backend(args.backend)
    result = answer(args.question, index, backend, k=args.k, mode=args.mode, min_similarity=args.min_similarity,
                    budget_tokens=args.budget, filters=parse_filters(args.filter), max_tokens=args.max_tokens,
                    **stages)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    print(result.text)
    if result.sources:
        print("\nSources:")
        for source in result.sources:
            print(("  " if source in result.cited else "  (not cited) ") + source.label())


def run_remove(args: argparse.Namespace) -> None:
    index = open_index(args.index, "cpu")
    changes = index.delete_sources([str(Path(p).resolve()) for p in args.paths])
    print(f"{args.index}: {changes.removed} chunks removed; {len(index)} chunks left")
