"""Documents -> chunks: pieces small enough to embed well and to quote in a prompt.

An embedding is one vector for a whole text, so a chunk should hold about one idea: a long
text averages many ideas into a vector close to none of them (and the encoder truncates past
its maximum length anyway). The chunker therefore:

  1. splits Markdown at its headings (outside code fences): a chunk never straddles two
     sections, and remembers its heading path ["Install", "From source"];
  2. cuts each section recursively: paragraphs, then lines, then sentences; a sentence longer
     than the budget is cut at spaces, and a "word" longer than that by characters;
  3. packs consecutive pieces into chunks of at most `max_tokens` tokens (counted with the
     embedder's own tokenizer), ending each chunk at the strongest break (paragraph > line >
     sentence > word) in its second half, and starts the next chunk with the last whole
     sentences that fit in `overlap` tokens, so a fact cut in two by a chunk border is still
     whole in one of them (a sentence longer than `overlap` is not repeated).

Chunk ids are a hash of the source, page, text and the count of identical earlier chunks: the
same file always gives the same ids, and editing one paragraph changes only its chunks' ids,
so re-indexing embeds only what changed.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from groklm.apps.rag.load import Document
from groklm.errors import ConfigError

# Break strengths, strongest first. A piece ends at a break of the level that cut it.
PARAGRAPH, LINE, SENTENCE, WORD, CHARACTER = range(5)
SEPARATORS = [
    re.compile(r"\n[ \t]*\n\s*"),  # a blank line
    re.compile(r"\n\s*"),
    re.compile(r"(?<=[.!?;。！？])\s+"),  # sentence ends (Latin and CJK punctuation)
    re.compile(r"\s+"),
]
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$")
FENCE = re.compile(r"^ {0,3}(```|~~~)")
WORD_OR_MARK = re.compile(r"\w+|[^\w\s]")


def approx_tokens(text: str) -> int:
    """Words and punctuation marks: a stand-in token count when the embedder's tokenizer is unknown."""
    return len(WORD_OR_MARK.findall(text))


@dataclass
class Chunk:
    id: str
    source: str
    text: str
    metadata: dict = field(default_factory=dict)  # format, start (char offset), page, headings, title


@dataclass
class Chunker:
    max_tokens: int = 200
    overlap: int = 40
    count_tokens: Callable[[str], int] = approx_tokens

    def __post_init__(self):
        if self.max_tokens < 8:
            raise ConfigError(f"chunk size {self.max_tokens} tokens is too small (use 8 or more)")
        if not 0 <= self.overlap < self.max_tokens // 2:
            raise ConfigError(f"overlap {self.overlap} must be >= 0 and below half the chunk size ({self.max_tokens})")

    def chunk_all(self, documents: Iterable[Document]) -> list[Chunk]:
        return [chunk for doc in documents for chunk in self.chunk(doc)]

    def chunk(self, doc: Document) -> list[Chunk]:
        chunks, seen = [], Counter()
        for headings, start, end in sections(doc):
            for s, e in self.windows(doc.text, start, end):
                text = doc.text[s:e].strip()
                if not text:
                    continue
                metadata = {"format": doc.format, **doc.metadata, "start": s}
                if doc.format == "markdown":
                    metadata["headings"] = headings
                key = (doc.metadata.get("page"), text)
                chunks.append(Chunk(chunk_id(doc.source, doc.metadata.get("page"), text, seen[key]), doc.source, text, metadata))
                seen[key] += 1
        return chunks

    # ---- cutting ----------------------------------------------------------------------------

    def pieces(self, text: str, start: int, end: int, level: int = PARAGRAPH) -> list[list[int]]:
        """[start, end, break] spans covering text[start:end]; `break` is the strength of the
        break after the piece. Paragraphs, lines and sentences are always separated (they are
        the units chunks are packed from); words and characters only when a piece is too long."""
        if level >= WORD and self.count_tokens(text[start:end]) <= self.max_tokens:
            return [[start, end, CHARACTER]]
        if level == CHARACTER:
            return self.hard_cut(text, start, end)
        out, piece_start = [], start
        for match in SEPARATORS[level].finditer(text, start, end):
            if match.start() > piece_start:
                out += self.pieces(text, piece_start, match.end(), level + 1)
                out[-1][2] = level
            piece_start = match.end()
        if piece_start < end:
            out += self.pieces(text, piece_start, end, level + 1)
        return out

    def hard_cut(self, text: str, start: int, end: int) -> list[list[int]]:
        """Cut a run with no spaces (a URL, a hash, a CJK sentence) into the longest prefixes that fit."""
        out = []
        while start < end:
            lo, hi = start + 1, end  # the longest prefix text[start:stop] within budget, by bisection
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if self.count_tokens(text[start:mid]) <= self.max_tokens else (lo, mid - 1)
            out.append([start, lo, CHARACTER])
            start = lo
        return out

    def windows(self, text: str, start: int, end: int) -> list[tuple[int, int]]:
        """Pack pieces into (start, end) chunk spans of at most max_tokens, overlapping."""
        pieces = self.pieces(text, start, end)
        tokens = [self.count_tokens(text[s:e]) for s, e, _ in pieces]
        spans, i = [], 0
        while i < len(pieces):
            j, total = i, 0
            while j < len(pieces) and total + tokens[j] <= self.max_tokens:
                total, j = total + tokens[j], j + 1
            j = max(j, i + 1)  # a piece is never above budget, but never stall either
            if j < len(pieces):
                # End at the strongest break in the window's second half (the latest on ties).
                half = i + (j - i + 1) // 2
                j = min(range(half, j + 1), key=lambda m: (pieces[m - 1][2], -m))
            spans.append((pieces[i][0], pieces[j - 1][1]))
            if j == len(pieces):
                break
            # Step back over up to `overlap` tokens of the chunk's tail for the next chunk.
            k, back = j, 0
            while k - 1 > i and back + tokens[k - 1] <= self.overlap:
                back, k = back + tokens[k - 1], k - 1
            i = k
        return spans


def sections(doc: Document) -> list[tuple[list[str], int, int]]:
    """(heading path, start, end) of each Markdown section; one section for other formats."""
    if doc.format != "markdown":
        return [([], 0, len(doc.text))]
    out, path, start, offset, fenced = [], [], 0, 0, False
    for line in doc.text.splitlines(keepends=True):
        if FENCE.match(line):
            fenced = not fenced
        heading = None if fenced else HEADING.match(line.rstrip("\n"))
        if heading:
            out.append((path, start, offset))
            level = len(heading.group(1))
            path = [*path[: level - 1], heading.group(2)]
            start = offset
        offset += len(line)
    out.append((path, start, len(doc.text)))
    return [(p, s, e) for p, s, e in out if doc.text[s:e].strip()]


def chunk_id(source: str, page: int | None, text: str, occurrence: int) -> str:
    key = f"{source}\x00{page}\x00{occurrence}\x00{text}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
