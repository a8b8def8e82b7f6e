"""The second retrieval stage: reranking (a deterministic judge, the cross-encoder against
transformers, a chat model scoring or answering yes/no), query rewriting, and the evaluation
that measures each, all without a real chat model."""

import json
import shutil

import pytest
import torch

import groklm.apps.rag.index as index_module
import groklm.cli.rag as rag_cli
from groklm.apps.backends import BackendError
from groklm.apps.rag.embed import default_model_dir
from groklm.apps.rag.evaluate import evaluate, read_queries
from groklm.apps.rag.grounded import answer
from groklm.apps.rag.index import Index
from groklm.apps.rag.rerank import (
    RERANK_DEPTH,
    BackendReranker,
    CrossEncoderReranker,
    Rewriter,
    load_reranker,
    rerank,
    rewrite_query,
)
from groklm.apps.rag.retrieve import search
from groklm.cli.main import main
from groklm.errors import CheckpointError, ConfigError

from helpers.backends import Scripted
from helpers.rag import HashEmbedder, doc

PASSAGES = {
    "/d/ferry.md": "The ferry sails from Port Selwyn to Aldmouth twice a day; the crossing takes 95 minutes.",
    "/d/harbour.md": "Port Selwyn harbour is busy: the Port Selwyn ferry, fishing boats and kelp barges all moor there.",
    "/d/lighthouse.md": "Kestrel Point Lighthouse was built in 1871 and is 31 metres tall.",
}


class WordCounter:
    """A reranker that is a plain function: the score is how often `word` occurs in the passage."""

    name = "word-counter"

    def __init__(self, word: str):
        self.word, self.asked = word, []

    def scores(self, query, passages):
        self.asked.append(list(passages))
        return [float(p.lower().count(self.word)) for p in passages]


class Scorer(Scripted):
    """A score-capable backend: says "yes" to passages that mention `word`."""

    def __init__(self, word: str):
        super().__init__([], frozenset({"score"}))
        self.word = word

    def score(self, messages, replies):
        self.sent.append({"messages": messages, "replies": list(replies)})
        yes = self.word in messages[-1]["content"].split("Passage:")[1]
        return [-0.1, -2.5] if yes else [-3.0, -0.2]


@pytest.fixture
def index(tmp_path):
    idx = Index.create(tmp_path / "idx", HashEmbedder(), max_tokens=60, overlap=5)
    idx.upsert([doc(source, text) for source, text in PASSAGES.items()])
    return idx


def sources(hits):
    return [hit.chunk.source for hit in hits]


# ---- reranking --------------------------------------------------------------------------------


def test_a_reranker_reorders_the_first_stage(index):
    first = search(index, "ferry Port Selwyn", k=3, mode="bm25")
    assert sources(first)[0] == "/d/harbour.md"  # more query words; the answer to "how long" is elsewhere
    judge = WordCounter("minutes")
    reranked = search(index, "ferry Port Selwyn", k=3, mode="bm25", reranker=judge)
    assert sources(reranked) == ["/d/ferry.md", "/d/harbour.md"]  # ties keep the first stage's order
    assert [h.score for h in reranked] == [1.0, 0.0]
    assert [h.similarity for h in reranked] == [next(f.similarity for f in first if f.chunk.id == h.chunk.id)
                                                for h in reranked]
    # rerank_depth bounds what the judge reads; past it, the first stage's order follows.
    judge = WordCounter("minutes")
    assert sources(search(index, "ferry Port Selwyn", k=2, mode="bm25", reranker=judge, rerank_depth=1)) == sources(first)
    assert judge.asked == [[first[0].chunk.text]]
    assert sources(rerank("q", first, WordCounter("lighthouse"), top_n=1)) == ["/d/harbour.md"]


def test_backend_reranker_scores_yes_minus_no(index):
    backend = Scorer("95 minutes")
    hits = search(index, "ferry Port Selwyn", k=2, mode="bm25", reranker=BackendReranker(backend))
    assert sources(hits) == ["/d/ferry.md", "/d/harbour.md"]
    assert [h.score for h in hits] == pytest.approx([-0.1 + 2.5, -3.0 + 0.2])
    asked = backend.sent[0]
    assert asked["replies"] == ["Yes", "No"]
    assert "Question: ferry Port Selwyn" in asked["messages"][-1]["content"] and "Yes or No" in asked["messages"][-1]["content"]


def test_backend_reranker_without_score_asks_and_parses():
    backend = Scripted(["Yes, it does.", "no"], capabilities=frozenset())
    assert BackendReranker(backend).scores("q", ["a", "b"]) == [1.0, 0.0]
    with pytest.raises(BackendError, match="cannot judge relevance"):
        BackendReranker(Scripted(["Perhaps."], capabilities=frozenset())).scores("q", ["a"])


# ---- the cross-encoder against transformers -------------------------------------------------


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory):
    """A tiny random BertForSequenceClassification saved as transformers saves it, with MiniLM's tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("cross-encoder")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=1)
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(default_model_dir() / name, folder / name)
    return folder


PAIRS = ("How long is the ferry crossing?", [
    "The crossing takes 95 minutes.",
    "Kestrel Point Lighthouse was built in 1871, and is painted in red and white bands.",
    "Lantern Night: children carry paper lanterns from the harbour to St. Ninian's Chapel " * 3,  # truncated
])


def test_cross_encoder_equals_transformers(cross_encoder_dir):
    from transformers import BertForSequenceClassification, BertTokenizerFast

    reference = BertForSequenceClassification.from_pretrained(cross_encoder_dir).eval()
    tokenizer = BertTokenizerFast(tokenizer_file=str(cross_encoder_dir / "tokenizer.json"))
    ours = CrossEncoderReranker.from_hf(cross_encoder_dir)
    assert ours.max_length == 64  # the model's positions: fewer than the tokenizer's 512
    query, passages = PAIRS
    batch = tokenizer([query] * len(passages), passages, padding=True, truncation="longest_first", max_length=64,
                      return_tensors="pt")
    assert batch["attention_mask"][2].all()  # the long passage really was cut
    for row, passage in enumerate(passages):
        ids, types = ours.pair_ids(query, passage)
        width = int(batch["attention_mask"][row].sum())
        assert ids == batch["input_ids"][row, :width].tolist() and types == batch["token_type_ids"][row, :width].tolist()
    with torch.no_grad():
        expected = reference(**batch).logits[:, 0]
    assert ours.scores(query, passages) == pytest.approx(expected.tolist(), abs=1e-5)
    assert len(set(ours.scores(query, passages))) == 3  # a random head still tells the passages apart


def test_cross_encoder_from_spec_and_bad_directories(cross_encoder_dir):
    assert isinstance(load_reranker(f"cross-encoder:{cross_encoder_dir}"), CrossEncoderReranker)
    with pytest.raises(CheckpointError, match="not a cross-encoder"):
        CrossEncoderReranker.from_hf(default_model_dir())  # a plain BERT: no classifier head


# ---- query rewriting ---------------------------------------------------------------------------


def test_rewrite_query_cleans_the_models_reply():
    backend = Scripted(['Query: "ferry crossing time Aldmouth"', "1. ferry duration\n2. boat trip length\n\n3. ferry duration"])
    queries = rewrite_query(backend, "so how long does it take to get over there by boat?", variants=2)
    assert queries == ["ferry crossing time Aldmouth", "ferry duration", "boat trip length"]
    assert backend.sent[0]["messages"][-1]["content"].endswith("how long does it take to get over there by boat?\nQuery:")
    assert backend.sent[0]["stop"] == ["\n"]  # one line: a model that goes on to answer is cut off
    assert rewrite_query(Scripted(["ferry"]), "q") == ["ferry"]  # no variants: one chat call


def test_rewritten_queries_are_fused_with_the_original(index):
    question = "is it built tall?"
    assert not search(index, "how old is it?", k=3, mode="bm25")  # no shared word: nothing found
    backend = Scripted(["Kestrel lighthouse 1871"])
    hits = search(index, "how old is it?", k=3, mode="bm25", rewrite=Rewriter(backend))
    assert sources(hits) == ["/d/lighthouse.md"]
    # The original is searched too, so a rewrite that loses its words cannot lose its hits.
    hits = search(index, question, k=3, mode="bm25", rewrite=Rewriter(Scripted(["unrelated words"])))
    assert sources(hits) == ["/d/lighthouse.md"]


def test_answer_uses_the_second_stage(index):
    chat = Scripted(["It takes 95 minutes [1]."])
    result = answer("ferry Port Selwyn", index, chat, k=1, mode="bm25", min_similarity=0.0,
                    reranker=WordCounter("minutes"))
    assert [s.source for s in result.sources] == ["/d/ferry.md"] and result.cited


# ---- evaluation and errors ---------------------------------------------------------------------


def test_evaluate_reports_each_stage(index, tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"query": "ferry Port Selwyn", "relevant": ["ferry.md"]}\n')
    queries = read_queries(path, index)
    results = evaluate(index, queries, k=1, modes=("bm25",), reranker=WordCounter("minutes"),
                       rewrite=Rewriter(Scripted(["harbour kelp barges"] * 2)), stage_mode="bm25",
                       latency=True)
    assert list(results) == ["bm25", "bm25+rewrite", "bm25+rerank", "bm25+rewrite+rerank"]
    assert results["bm25"]["recall@1"] == 0.0 and results["bm25"]["mrr@10"] == 0.5
    assert results["bm25+rewrite"]["recall@1"] == 0.0  # the rewrite pulls harbour.md up further
    assert results["bm25+rerank"]["recall@1"] == 1.0 and results["bm25+rewrite+rerank"]["mrr@10"] == 1.0
    assert all(row["ms_per_query"] >= 0 for row in results.values())
    assert list(evaluate(index, queries, k=1, modes=("dense",), reranker=WordCounter("x"))) == ["dense", "hybrid",
                                                                                               "hybrid+rerank"]


def test_cli_measures_and_uses_the_reranker(index, cross_encoder_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(index_module, "load_embedder", lambda spec, device="cpu": HashEmbedder())
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"query": "ferry Port Selwyn", "relevant": ["ferry.md"]}\n')
    main(["rag", "eval", str(index.path), "--queries", str(queries), "--rerank", f"cross-encoder:{cross_encoder_dir}",
          "--rerank-depth", "2", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert list(report)[-4:] == ["dense", "bm25", "hybrid", "hybrid+rerank"]
    assert set(report["hybrid+rerank"]) == {"recall@10", "mrr@10", "ndcg@10", "ms_per_query"}
    main(["rag", "eval", str(index.path), "--queries", str(queries), "--rerank", f"cross-encoder:{cross_encoder_dir}"])
    assert "hybrid+rerank" in capsys.readouterr().out.splitlines()[-1]
    main(["rag", "search", str(index.path), "ferry Port Selwyn", "--mode", "bm25", "--json",
          "--rerank", f"cross-encoder:{cross_encoder_dir}"])
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = CrossEncoderReranker.from_hf(cross_encoder_dir).scores("ferry Port Selwyn", [h["text"] for h in hits])
    assert [h["score"] for h in hits] == pytest.approx(sorted(expected, reverse=True), abs=1e-5)


def test_bad_specs_are_config_errors(index, capsys):
    for spec in ("nope", "cross-encoder:", "backend:", "backend:bogus:x"):
        with pytest.raises(ConfigError):
            load_reranker(spec)
    with pytest.raises(ConfigError, match="rerank_depth"):
        search(index, "ferry", reranker=WordCounter("x"), rerank_depth=0)
    with pytest.raises(ConfigError, match="variants"):
        Rewriter(Scripted([]), variants=-1)
    with pytest.raises(SystemExit):
        main(["rag", "search", str(index.path), "ferry", "--rerank", "colbert:x"])
    assert "unknown reranker" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["rag", "search", str(index.path), "ferry", "--rewrite-variants", "2"])
    assert "needs --rewrite" in capsys.readouterr().err
    assert rag_cli.RERANK_DEPTH == RERANK_DEPTH
