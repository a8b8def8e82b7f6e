"""Synthetic rephrasing: chunks, prompts, the checks on replies, the resumable output file, the
backends' batch paths (local: one engine batch; openai: concurrent requests), and the command line."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from groklm.apps.backends import LocalBackend, OpenAIBackend
from groklm.apps.rephrase import (
    MAX_RATIO,
    PROMPTS,
    QA_PROMPT,
    WIKI_PROMPT,
    Chunk,
    check_reply,
    chunk_text,
    prompt_messages,
    read_chunks,
    rephrase,
)
from groklm.cli.main import main
from groklm.errors import ConfigError
from groklm.jsonl import read_jsonl

from helpers.backends import Scripted
from helpers.runs import tiny_run


def words(n: int, word: str = "w") -> str:
    return " ".join(f"{word}{i}" for i in range(n))


# ---- chunks ---------------------------------------------------------------------------------


def test_chunks_join_whole_paragraphs_while_they_fit():
    paragraphs = [words(40, "a"), words(40, "b"), words(40, "c"), words(10, "d")]
    chunks = chunk_text("\n\n".join(paragraphs) + "\n", words=100)
    assert chunks == ["\n\n".join(paragraphs[:2]), "\n\n".join(paragraphs[2:])]


def test_a_long_paragraph_is_cut_between_sentences_and_a_long_sentence_by_words():
    sentences = [words(30, "s") + ".", words(30, "t") + ".", words(30, "u") + "."]
    chunks = chunk_text(" ".join(sentences), words=70)
    assert chunks == [" ".join(sentences[:2]), sentences[2]]
    long = chunk_text(words(250), words=100)
    assert [len(c.split()) for c in long] == [100, 100, 50]
    assert " ".join(long) == words(250)


def test_every_word_lands_in_exactly_one_chunk_in_order():
    text = "\n\n".join(f"{words(n, f'p{n}x')}. {words(n // 2, f'q{n}x')}!" for n in (5, 80, 300, 12, 7, 150))
    chunks = chunk_text(text, words=60)
    assert " ".join(" ".join(chunks).split()) == " ".join(text.split())
    assert max(len(c.split()) for c in chunks) <= 60
    with pytest.raises(ConfigError, match="chunk-words"):
        chunk_text(text, words=0)


# ---- prompts and checks ---------------------------------------------------------------------


def test_each_style_asks_for_its_rewrite_with_the_chunk_after_the_instructions():
    assert set(PROMPTS) == {"wiki", "qa"}
    assert "Wikipedia" in WIKI_PROMPT and "Question:" in QA_PROMPT and "Answer:" in QA_PROMPT
    [wiki] = prompt_messages("To be or not to be.", "wiki")
    assert wiki["role"] == "user" and wiki["content"].startswith(WIKI_PROMPT) and wiki["content"].endswith("To be or not to be.")
    assert prompt_messages("x", "qa")[0]["content"].startswith(QA_PROMPT)
    with pytest.raises(ConfigError, match="style"):
        prompt_messages("x", "poem")


def test_replies_that_are_empty_too_short_too_long_or_echo_the_prompt_are_refused():
    chunk = words(100)
    assert check_reply(chunk, words(90, "r"), "wiki") is None
    assert check_reply(chunk, "  \n", "wiki") == "empty"
    assert check_reply(chunk, words(20), "wiki") == "too_short"
    assert check_reply(chunk, words(int(100 * MAX_RATIO["wiki"]) + 1), "wiki") == "too_long"
    assert check_reply(chunk, words(int(100 * MAX_RATIO["wiki"]) + 1), "qa") is None  # Q&A may run longer
    echo = "Sure. " + WIKI_PROMPT + " " + words(60, "r")
    assert check_reply(chunk, echo, "wiki") == "echoes_prompt"


def test_copies_of_the_chunk_and_generation_loops_are_refused():
    chunk = words(100)
    assert check_reply(chunk, "The text says: " + words(100), "wiki") == "copies_text"
    assert check_reply(chunk, words(40) + " " + words(60, "r"), "wiki") is None  # quoting part of it is fine
    loop = "\n".join(["The citizens are hungry and angry."] * 12 + [words(30, "r")])
    assert check_reply(chunk, loop, "wiki") == "duplicate_lines"
    assert check_reply(chunk, "the people " * 60, "wiki") == "repetition"


# ---- the loop -------------------------------------------------------------------------------


def chunks_of(*texts: str) -> list[Chunk]:
    return [Chunk("doc.txt", i, text) for i, text in enumerate(texts)]


def test_records_are_written_and_a_rerun_asks_only_for_what_is_missing(tmp_path):
    out = tmp_path / "rephrased.jsonl"
    chunks = chunks_of(words(20, "a"), words(20, "b"), words(20, "c"))
    backend = Scripted([words(18, "newA"), words(22, "newB")])
    stats = rephrase(backend, chunks[:2], "wiki", out, batch=2, progress=False)
    assert (stats.kept, stats.asked, stats.done_before) == (2, 2, 0)
    records = read_jsonl(out)
    assert [r["text"] for r in records] == [words(18, "newA"), words(22, "newB")]
    assert records[0] == {"source": "doc.txt", "chunk": 0, "hash": chunks[0].hash, "style": "wiki",
                          "backend": "scripted:scripted", "original": chunks[0].text, "text": words(18, "newA"),
                          "dropped": None}
    assert backend.sent[0]["messages"] == prompt_messages(chunks[0].text, "wiki")

    again = Scripted([words(20, "newC")])
    stats = rephrase(again, chunks, "wiki", out, batch=2, progress=False)
    assert (stats.done_before, stats.asked, len(again.sent)) == (2, 1, 1)
    assert again.sent[0]["messages"] == prompt_messages(chunks[2].text, "wiki")
    assert [r["text"] for r in read_jsonl(out)][-1] == words(20, "newC")

    other_style = Scripted([words(20, "newQ")] * 3)
    assert rephrase(other_style, chunks, "qa", out, progress=False).asked == 3  # a style is its own job


def test_a_line_cut_short_by_a_killed_run_is_asked_again(tmp_path):
    out = tmp_path / "rephrased.jsonl"
    chunks = chunks_of(words(20, "a"), words(20, "b"))
    rephrase(Scripted([words(20, "newA"), words(20, "newB")]), chunks, "wiki", out, progress=False)
    out.write_text(out.read_text()[:-30])  # the second record lost its end
    backend = Scripted([words(20, "newB")])
    with pytest.warns(UserWarning, match="skipped 1 bad line"):
        stats = rephrase(backend, chunks, "wiki", out, progress=False)
    assert (stats.done_before, stats.asked) == (1, 1)
    with pytest.warns(UserWarning, match="skipped 1 bad line"):
        assert [r["text"] for r in read_jsonl(out, skip_bad_lines=True)] == [words(20, "newA"), words(20, "newB")]


def test_bad_replies_are_dropped_counted_and_not_asked_again(tmp_path):
    out = tmp_path / "rephrased.jsonl"
    chunks = chunks_of(*(words(20, x) for x in "abcd"))
    backend = Scripted(["", words(2), WIKI_PROMPT, words(20, "newD")])
    stats = rephrase(backend, chunks, "wiki", out, batch=3, progress=False)
    assert stats.kept == 1 and dict(stats.dropped) == {"empty": 1, "too_short": 1, "echoes_prompt": 1}
    records = read_jsonl(out)
    assert [r["dropped"] for r in records] == ["empty", "too_short", "echoes_prompt", None]
    assert [r["text"] for r in records[:3]] == ["", "", ""] and records[1]["reply"] == words(2)
    assert rephrase(Scripted([]), chunks, "wiki", out, progress=False).done_before == 4


def test_bad_settings_are_config_errors(tmp_path):
    chunks = chunks_of("a b c")
    for options, says in (({"style": "poem"}, "style"), ({"batch": 0}, "batch"), ({"max_tokens": 0}, "max-tokens")):
        with pytest.raises(ConfigError, match=says):
            rephrase(Scripted([]), chunks, **{"style": "wiki", **options}, out=tmp_path / "o.jsonl", progress=False)


def test_read_chunks_reads_sources_in_order_up_to_max_chunks(tmp_path):
    (tmp_path / "a.txt").write_text(words(30, "a") + "\n\n" + words(30, "b"))
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": words(10, "c")}) + "\n")
    chunks = read_chunks([str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl")], chunk_words=40)
    assert [(c.source.rsplit("/", 1)[-1], c.index, c.text.split()[0]) for c in chunks] == [
        ("a.txt", 0, "a0"), ("a.txt", 1, "b0"), ("b.jsonl", 0, "c0")]
    assert len(read_chunks([str(tmp_path)], chunk_words=40, max_chunks=2)) == 2


# ---- the local engine -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("rephrase") / "tiny", block_size=512, n_embd=32)


def test_local_chat_many_decodes_a_batch_as_one_by_one_greedy_calls(tiny):
    conversations = [prompt_messages(text, "wiki") for text in ("Hello there.", "A much longer text, " * 4, "Short")]
    one_by_one = LocalBackend(tiny)
    batched = LocalBackend(tiny, max_batch=3)
    expected = [one_by_one.chat(c, max_tokens=24) for c in conversations]
    replies = batched.chat_many(conversations, max_tokens=24)
    assert [r.text for r in replies] == [r.text for r in expected]
    assert [r.usage for r in replies] == [r.usage for r in expected]
    assert all(r.text for r in replies)  # a random model says something, so the comparison means something


def test_cli_rephrases_with_a_local_run_and_prepare_reads_the_output(tiny, tmp_path, capsys):
    source = tmp_path / "corpus.txt"
    source.write_text("\n\n".join(f"Paragraph {i} says something about the sea." for i in range(5)))
    out = tmp_path / "rephrased.jsonl"
    args = ["data", "rephrase", str(source), "--backend", f"local:{tiny}", "--style", "qa", "--out", str(out),
            "--chunk-words", "14", "--max-chunks", "2", "--batch", "2", "--max-tokens", "40"]
    main(args)
    records = read_jsonl(out)
    assert [(r["chunk"], r["style"], r["backend"]) for r in records] == [(0, "qa", f"local:{tiny}"), (1, "qa", f"local:{tiny}")]
    assert records[0]["original"] == "Paragraph 0 says something about the sea.\n\nParagraph 1 says something about the sea."
    assert "0 done before (of 2 chunks)" in capsys.readouterr().out
    main(args)
    assert "2 done before (of 2 chunks)" in capsys.readouterr().out and len(read_jsonl(out)) == 2

    # The random model's replies may all be dropped; give prepare one kept record to read too.
    with open(out, "a") as handle:
        handle.write(json.dumps({**records[0], "text": "Question: what? Answer: the sea.", "dropped": None}) + "\n")
    kept = [r["text"] for r in read_jsonl(out) if r["text"]]
    main(["data", "prepare", str(out), "--tokenizer", "char", "--out", str(tmp_path / "data"), "--val-fraction", "0",
          "--license", "CC0-1.0"])
    meta = json.loads((tmp_path / "data" / "meta.json").read_text())
    assert meta["documents"] == len(kept)


def test_openai_chat_many_sends_the_batch_at_once_and_keeps_the_order():
    """Three requests must all be in flight before any is answered (the barrier), and each reply
    comes back in its conversation's place."""
    arrived = threading.Barrier(3, timeout=30)

    def server(request):
        arrived.wait()
        content = json.loads(request.content)["messages"][0]["content"]
        return httpx.Response(200, json={"choices": [{"message": {"content": content.upper()}, "finish_reason": "stop"}]})

    remote = OpenAIBackend("http://test/v1", model="m", api_key="k", transport=httpx.MockTransport(server))
    replies = remote.chat_many([[{"role": "user", "content": text}] for text in ("one", "two", "three")], max_tokens=8)
    assert [r.text for r in replies] == ["ONE", "TWO", "THREE"]
    assert remote.chat_many([]) == []
