"""Files -> documents: plain text, Markdown, HTML (text only) and PDF, one file or a folder.

A `Document` is text plus where it came from: the file (`source`, an absolute path, so that
re-indexing a file from another working directory updates it rather than adding a copy), and
for a PDF the page. HTML is turned into Markdown-like text (headings become "#" lines) so the
chunker's heading awareness works on web pages too.

Nothing is dropped silently: every file that cannot be read, or holds no text, comes back in
`skipped` with the reason. Folders are walked with a glob; hidden files and folders (".git")
are not walked into.

A file larger than `max_file_mb` (MAX_FILE_MB unless raised, `--max-file-mb` on the command
line) is skipped with the reason before it is read: a megabyte of text is about 2,000 chunks
and well over a minute of embedding on a CPU, so a 50 MB log or database dump picked up by a
glob would silently cost an hour. Raise the limit for a file you do mean to index.
"""

from __future__ import annotations

import math
import stat
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from pypdf import PdfReader
from pypdf.errors import PdfReadError
from tqdm import tqdm

from groklm.errors import DataError

TEXT_SUFFIXES = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown"}
HTML_SUFFIXES = {".html", ".htm"}
SUFFIXES = sorted([*TEXT_SUFFIXES, *HTML_SUFFIXES, ".pdf"])
MAX_FILE_MB = 10.0  # per file; see the module doc


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


def load_paths(paths: list[str | Path], glob: str = "**/*", max_file_mb: float = MAX_FILE_MB,
               progress: bool = False) -> Loaded:
    """Load every file named in `paths`; folders are searched with `glob` (relative to each)."""
    entries: list[Path | Skipped] = []  # every file first, in order, so progress can count them
    for path in map(Path, paths):
        if path.is_dir():
            entries += sorted(f for f in path.glob(glob) if f.is_file() and not is_hidden(f.relative_to(path)))
        elif path.exists():
            entries.append(path)
        else:
            entries.append(Skipped(str(path), "does not exist"))
    loaded = Loaded([], [])
    for entry in tqdm(entries, desc="reading", unit="file", disable=not progress):
        if isinstance(entry, Skipped):
            loaded.skipped.append(entry)
            continue
        try:
            loaded.documents.extend(load_file(entry, max_file_mb))
        except DataError as error:
            loaded.skipped.append(Skipped(str(entry.resolve()), str(error)))
    return loaded


def is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def load_file(path: str | Path, max_file_mb: float = MAX_FILE_MB) -> list[Document]:
    """The documents of one file (a PDF gives one per page); DataError if it cannot be read."""
    path = Path(path)
    source, suffix = str(path.resolve()), path.suffix.lower()
    check_size(path, max_file_mb)
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


def check_size(path: Path, max_file_mb: float) -> None:
    try:
        status = path.stat()
    except OSError as error:
        raise DataError(f"cannot read: {error.strerror or error}") from error
    if not stat.S_ISREG(status.st_mode):  # a device or a pipe has no size and may never end (/dev/zero)
        raise DataError("not a regular file")
    size_mb = status.st_size / 1e6
    if size_mb > max_file_mb:
        raise DataError(f"{size_mb:.1f} MB is more than the {max_file_mb:g} MB limit for one file; pass "
                        f"--max-file-mb {math.ceil(size_mb)} (max_file_mb= in Python) to index it")


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
