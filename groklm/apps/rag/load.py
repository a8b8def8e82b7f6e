"""Files -> documents: plain text, Markdown, HTML (text only) and PDF, one file or a folder.

A `Document` is text plus where it came from: the file (`source`, an absolute path, so that
re-indexing a file from another working directory updates it rather than adding a copy), and
for a PDF the page. HTML is turned into Markdown-like text (headings become "#" lines) so the
chunker's heading awareness works on web pages too.

Nothing is dropped silently: every file that cannot be read, or holds no text, comes back in
`skipped` with the reason. Folders are walked with a glob; hidden files and folders (".git")
are not walked into.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from pypdf import PdfReader
from pypdf.errors import PdfReadError

from groklm.errors import DataError

TEXT_SUFFIXES = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown"}
HTML_SUFFIXES = {".html", ".htm"}
SUFFIXES = sorted([*TEXT_SUFFIXES, *HTML_SUFFIXES, ".pdf"])


@dataclass
class Document:
    source: str  # absolute path of the file
    text: str
    format: str  # "text", "markdown" (HTML arrives as markdown) or "pdf"
    metadata: dict = field(default_factory=dict)  # e.g. {"page": 3} for a PDF, {"title": ...} for HTML


@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class Loaded:
    documents: list[Document]
    skipped: list[Skipped]

    @property
    def sources(self) -> set[str]:
        return {doc.source for doc in self.documents}


def load_paths(paths: list[str | Path], glob: str = "**/*") -> Loaded:
    """Load every file named in `paths`; folders are searched with `glob` (relative to each)."""
    loaded = Loaded([], [])
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(f for f in path.glob(glob) if f.is_file() and not is_hidden(f.relative_to(path)))
        elif path.exists():
            files = [path]
        else:
            loaded.skipped.append(Skipped(str(path), "does not exist"))
            continue
        for file in files:
            try:
                loaded.documents.extend(load_file(file))
            except DataError as error:
                loaded.skipped.append(Skipped(str(file.resolve()), str(error)))
    return loaded


def is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def load_file(path: str | Path) -> list[Document]:
    """The documents of one file (a PDF gives one per page); DataError if it cannot be read."""
    path = Path(path)
    source, suffix = str(path.resolve()), path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        documents = [Document(source, read_text(path), TEXT_SUFFIXES[suffix])]
    elif suffix in HTML_SUFFIXES:
        text, title = html_to_markdown(read_text(path))
        documents = [Document(source, text, "markdown", {"title": title} if title else {})]
    elif suffix == ".pdf":
        documents = read_pdf(path, source)
    else:
        raise DataError(f"unsupported file type {suffix or '(none)'}; supported: {', '.join(SUFFIXES)}")
    documents = [doc for doc in documents if doc.text.strip()]
    if not documents:
        raise DataError("no text in the file" + (" (a scanned PDF has only images)" if suffix == ".pdf" else ""))
    return documents


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"not UTF-8 text ({error.reason} at byte {error.start})") from error
    except OSError as error:
        raise DataError(f"cannot read: {error.strerror or error}") from error


def read_pdf(path: Path, source: str) -> list[Document]:
    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise DataError("the PDF is encrypted")
        return [
            Document(source, page.extract_text() or "", "pdf", {"page": number})
            for number, page in enumerate(reader.pages, start=1)
        ]
    except (PdfReadError, OSError, ValueError, KeyError) as error:
        raise DataError(f"not a readable PDF: {error}") from error


# ---- HTML ------------------------------------------------------------------------------------

BLOCKS = {"p", "div", "section", "article", "main", "header", "footer", "nav", "aside", "br", "hr",
          "ul", "ol", "li", "table", "tr", "pre", "blockquote", "figure", "figcaption", "dl", "dt", "dd"}  # fmt: skip
INVISIBLE = {"script", "style", "head", "template", "noscript", "svg", "iframe", "object"}
HEADINGS = {f"h{level}": level for level in range(1, 7)}


class TextExtractor(HTMLParser):
    """Collects the visible text of a page; headings become Markdown "#" lines, blocks newlines."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = [""]
        self.hidden_depth = 0  # inside <script>, <style>, ...: nothing visible
        self.in_title = False
        self.title = ""

    def handle_starttag(self, tag, attrs):
        if tag in INVISIBLE:
            self.hidden_depth += 1
        elif tag == "title":
            self.in_title = True
        elif tag in HEADINGS:
            self.new_block("#" * HEADINGS[tag] + " ")
        elif tag in BLOCKS:
            self.new_block("- " if tag == "li" else "")

    def handle_endtag(self, tag):
        if tag in INVISIBLE:
            self.hidden_depth = max(0, self.hidden_depth - 1)
        elif tag == "title":
            self.in_title = False
        elif tag in HEADINGS or tag in BLOCKS:
            self.new_block("")

    def handle_data(self, data):
        if self.in_title:
            self.title += data
        elif not self.hidden_depth:
            self.lines[-1] += data

    def new_block(self, prefix: str):
        self.lines.append(prefix)


def html_to_markdown(html: str) -> tuple[str, str]:
    """(visible text with headings as "#" lines and blocks separated by blank lines, page title)."""
    parser = TextExtractor()
    parser.feed(html)
    parser.close()
    # Inside a block, any run of whitespace (the source file's line breaks) is one space.
    blocks = [" ".join(line.split()) for line in parser.lines]
    blocks = [b for b in blocks if b.strip("#- ")]  # drop empty blocks and bare "-" / "#" prefixes
    return "\n\n".join(blocks), " ".join(parser.title.split())
