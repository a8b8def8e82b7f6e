"""Chunking: token budget (counted with the real WordPiece tokenizer), overlap, heading paths,
code fences, stable ids, and ids that change only where the text changed."""

import pytest

from groklm.apps.rag.chunk import Chunker
from groklm.apps.rag.embed import default_model_dir
from groklm.apps.rag.load import Document
from groklm.errors import ConfigError
from groklm.tokenizer.wordpiece import WordPieceTokenizer


@pytest.fixture(scope="module")
def count():
    return WordPieceTokenizer.from_hf_file(default_model_dir() / "tokenizer.json").count


def markdown() -> str:
    facts = " ".join(f"Fact {i}: the {['red', 'blue', 'green'][i % 3]} valve number {i} opens at {i * 7} bar." for i in range(30))
    return (
        "Preface before any heading.\n\n"
        "# Install\n\nRun the installer. Then reboot.\n\n"
        "## From source\n\n" + facts + "\n\n"
        "```python\n# this is a comment, not a heading\nprint('hi')\n```\n\n"
        "# Usage\n\nCall `run()` and wait.\n\n"
        "### Deep detail\n\n" + "https://example.com/" + "a" * 400 + "\n"
    )


def test_budget_overlap_and_coverage(count):
    chunker = Chunker(max_tokens=48, overlap=20, count_tokens=count)
    text = markdown()
    chunks = chunker.chunk(Document("/x.md", text, "markdown"))
    assert all(count(c.text) <= 48 for c in chunks)
    # Every sentence of the long section is whole in some chunk, and neighbours overlap.
    for i in range(30):
        sentence = f"Fact {i}: the {['red', 'blue', 'green'][i % 3]} valve number {i} opens at {i * 7} bar."
        assert any(sentence in c.text for c in chunks), sentence
    section = [c for c in chunks if c.metadata["headings"] == ["Install", "From source"] and "Fact" in c.text]
    assert len(section) > 3
    for a, b in zip(section, section[1:]):
        assert b.metadata["start"] < a.metadata["start"] + len(a.text)  # b starts inside a
    # Nothing is lost: every word of the document is in some chunk.
    words = set(text.split())
    assert words <= set(" ".join(c.text for c in chunks).split())


def test_heading_paths_and_code_fences(count):
    chunks = Chunker(max_tokens=200, overlap=20, count_tokens=count).chunk(Document("/x.md", markdown(), "markdown"))
    paths = [c.metadata["headings"] for c in chunks]
    assert paths[0] == [] and chunks[0].text == "Preface before any heading."
    assert ["Install"] in paths and ["Usage", "Deep detail"] in paths
    assert ["this is a comment, not a heading"] not in paths and not any("this is a comment" in p for path in paths for p in path)
    fenced = next(c for c in chunks if "print('hi')" in c.text)
    assert fenced.metadata["headings"] == ["Install", "From source"]
    for before, chunk in zip(chunks, chunks[1:]):
        if chunk.metadata["headings"] != before.metadata["headings"]:
            assert chunk.text.startswith("#")  # a section's first chunk opens with its heading


def test_text_without_spaces_is_cut_to_budget(count):
    text = "机器学习很有趣" * 40  # Chinese has no spaces: 280 characters, one token each
    chunks = Chunker(max_tokens=30, overlap=0, count_tokens=count).chunk(Document("/u.txt", text, "text"))
    assert [count(c.text) for c in chunks] == [30] * 9 + [10]
    assert "".join(c.text for c in chunks) == text


def test_ids_are_stable_and_local_to_edits(count):
    chunker = Chunker(max_tokens=40, overlap=8, count_tokens=count)
    paragraphs = [f"Paragraph {i} says something specific about topic number {i}." for i in range(24)]
    original = Document("/p.txt", "\n\n".join(paragraphs), "text")
    first = [c.id for c in chunker.chunk(original)]
    assert first == [c.id for c in chunker.chunk(Document("/p.txt", original.text, "text"))]
    assert len(set(first)) == len(first)
    edited = list(paragraphs)
    edited[17] = "Paragraph 17 was rewritten entirely."
    second = [c.id for c in chunker.chunk(Document("/p.txt", "\n\n".join(edited), "text"))]
    assert len(first) == 6  # four 10-token paragraphs per 40-token chunk
    assert second[:4] == first[:4]  # the chunks before the edit keep their ids
    assert 0 < len(set(second) - set(first)) <= 2  # only the chunk(s) from the edit on are new
    elsewhere = [c.id for c in chunker.chunk(Document("/q.txt", original.text, "text"))]
    assert not set(elsewhere) & set(first)  # ids belong to their source


def test_repeated_text_gets_distinct_ids():
    chunks = Chunker(max_tokens=8, overlap=0).chunk(Document("/r.txt", "Same five words here now.\n\nSame five words here now.", "text"))
    assert [c.text for c in chunks] == ["Same five words here now."] * 2
    assert chunks[0].id != chunks[1].id


def test_pages_are_part_of_the_id():
    a = Chunker().chunk(Document("/m.pdf", "Identical page text.", "pdf", {"page": 1}))
    b = Chunker().chunk(Document("/m.pdf", "Identical page text.", "pdf", {"page": 2}))
    assert a[0].id != b[0].id and a[0].metadata["page"] == 1


def test_bad_settings():
    with pytest.raises(ConfigError, match="too small"):
        Chunker(max_tokens=4)
    with pytest.raises(ConfigError, match="overlap"):
        Chunker(max_tokens=100, overlap=60)
