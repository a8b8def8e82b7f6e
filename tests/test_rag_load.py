"""Loaders: text, Markdown, HTML, PDF (a PDF written here, byte by byte), folders and globs,
and every unreadable file reported as skipped."""

from pathlib import Path

import pytest

from groklm.apps.rag.load import html_to_markdown, load_file, load_paths
from groklm.errors import DataError

from helpers.rag import write_pdf


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "notes.txt").write_text("Plain notes about llamas.", encoding="utf-8")
    (root / "guide.md").write_text("# Guide\n\nSome *markdown*.", encoding="utf-8")
    (root / "sub" / "page.html").write_text(
        "<html><head><title>The  Page</title><style>p {color: red}</style><script>var x = 1;</script></head>"
        "<body><h1>Welcome</h1><p>Hello <b>bold</b>\n world &amp; more.</p><ul><li>one</li><li>two</li></ul>"
        "<h2>Details</h2><p>Fine print.</p></body></html>",
        encoding="utf-8",
    )
    write_pdf(root / "sub" / "manual.pdf", ["First page says hello", "Second page says goodbye"])
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (root / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (root / "image.png").write_bytes(b"\x89PNG\r\n")
    (root / "empty.md").write_text("   \n", encoding="utf-8")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "secret.txt").write_text("do not walk into hidden folders")
    return root


def test_pdf_pages_with_numbers(corpus):
    pages = load_file(corpus / "sub" / "manual.pdf")
    assert [d.metadata["page"] for d in pages] == [1, 2]
    assert "First page says hello" in pages[0].text and "goodbye" in pages[1].text
    assert all(d.format == "pdf" and d.source == str((corpus / "sub" / "manual.pdf").resolve()) for d in pages)


def test_pdf_written_by_pypdf_is_read(tmp_path):
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(612, 792)
    with open(tmp_path / "blank.pdf", "wb") as handle:
        writer.write(handle)
    with pytest.raises(DataError, match="scanned PDF"):  # a page without text: nothing to index
        load_file(tmp_path / "blank.pdf")


def test_html_text_only_with_headings():
    text, title = html_to_markdown(
        "<title>T</title><h1>Top</h1><p>Para <i>one</i>.</p><script>alert('x')</script><style>.a{}</style>"
        "<h3>Deep</h3><li>item</li>"
    )
    assert title == "T"
    assert text == "# Top\n\nPara one.\n\n### Deep\n\n- item"


def test_folder_walk_with_skips(corpus):
    loaded = load_paths([corpus])
    names = sorted(Path(d.source).name for d in loaded.documents)
    assert names == ["guide.md", "manual.pdf", "manual.pdf", "notes.txt", "page.html"]
    skipped = {Path(s.path).name: s.reason for s in loaded.skipped}
    assert set(skipped) == {"latin1.txt", "broken.pdf", "image.png", "empty.md"}
    assert "UTF-8" in skipped["latin1.txt"] and "PDF" in skipped["broken.pdf"]
    assert "unsupported" in skipped["image.png"] and "no text" in skipped["empty.md"]
    html = next(d for d in loaded.documents if d.source.endswith("page.html"))
    assert html.format == "markdown" and html.metadata == {"title": "The Page"}
    assert html.text.startswith("# Welcome\n\nHello bold world & more.") and "var x" not in html.text


def test_glob_and_missing_paths(corpus, tmp_path):
    loaded = load_paths([corpus, tmp_path / "nope.txt", corpus / "notes.txt"], glob="**/*.md")
    assert sorted(Path(d.source).name for d in loaded.documents) == ["guide.md", "notes.txt"]
    assert [(Path(s.path).name, s.reason) for s in loaded.skipped] == [("empty.md", "no text in the file"), ("nope.txt", "does not exist")]
