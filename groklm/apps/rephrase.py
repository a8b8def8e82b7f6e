"""Synthetic rephrasing: a model rewrites a corpus in a cleaner style, for pretraining on both.

After "Rephrasing the Web" (Maini et al., 2024): web text is noisy, and a small instruction
model asked to rewrite it "like Wikipedia" or "as questions and answers" turns the same
knowledge into text that a language model learns from faster. Pretraining on the real text
and its rephrasings together keeps the real text's variety.

    documents ─► chunks of about `chunk_words` words (whole paragraphs where they fit)
              ─► backend.chat_many(a batch of prompts)  (local: one engine batch; openai: the batch's
                 requests in flight at once, one thread each; hf: one by one)
              ─► checks: not empty, not far shorter or longer than the chunk, neither echoing the
                 prompt nor copying the chunk, no generation loop
              ─► OUT.jsonl, a record per chunk, appended as replies come

Each record is {"source", "chunk" (its index in the document), "hash", "style", "backend",
"original", "text", "dropped"}. "text" is the rephrasing, so `groklm data prepare OUT.jsonl`
trains on exactly the rephrased texts; a dropped reply leaves "text" empty (prepare skips
empty texts), names its reason in "dropped" and keeps the reply in "reply" for inspection.
A rerun skips every chunk already in OUT.jsonl with the same hash, style and backend (kept or
dropped: decoding is greedy, so asking again would give the same reply).

    groklm data rephrase shakespeare --backend local:/tmp/smol --style wiki --out rephrased.jsonl
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from groklm.apps.backends import Backend
from groklm.data.clean import read_documents
from groklm.data.quality import failed_rule
from groklm.data.sources import resolve
from groklm.errors import ConfigError
from groklm.jsonl import appending_jsonl, read_jsonl

# The instructions, one per style; the chunk follows them in the same user message, so a model
# without a system role reads them too.
WIKI_PROMPT = (
    "Rewrite the following text like a Wikipedia article: clear, factual, well-formed sentences in a "
    "neutral tone. Keep what the text says and add nothing it does not say. Reply with the rewritten "
    "text only."
)
QA_PROMPT = (
    "Rewrite the following text as questions and answers about the text: each question on a line that "
    "starts with \"Question:\", its answer on the next line, starting with \"Answer:\". Use only what the "
    "text says. Reply with the questions and answers only."
)
PROMPTS = {"wiki": WIKI_PROMPT, "qa": QA_PROMPT}
STYLES = tuple(PROMPTS)

# A reply far shorter than its chunk lost most of it; a far longer one rambles or repeats.
# Question-and-answer pairs repeat the text's words in both halves, so they may run longer.
MIN_RATIO = 0.3
MAX_RATIO = {"wiki": 2.5, "qa": 4.0}
ECHO_WORDS = 6  # a reply holding any 6 consecutive words of the instructions is copying the prompt
MAX_COPIED = 0.5  # a reply more than half of whose 6-word runs are in the chunk is a copy, not a rewrite
PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


# ---- chunks ---------------------------------------------------------------------------------


def chunk_text(text: str, words: int = 200) -> list[str]:
    """The text cut into chunks of at most about `words` words: whole paragraphs (blank-line
    separated) joined while they fit; a longer paragraph is cut between sentences, and a longer
    sentence every `words` words."""
    if words < 1:
        raise ConfigError(f"--chunk-words must be at least 1, got {words}")
    pieces = [piece for paragraph in PARAGRAPH_BREAK.split(text) for piece in _pieces(paragraph.strip(), words)]
    return _pack(pieces, words, "\n\n")


def _pieces(paragraph: str, words: int) -> list[str]:
    """A paragraph as is if it fits in `words`, else its sentences packed up to `words`."""
    if not paragraph or len(paragraph.split()) <= words:
        return [paragraph] if paragraph else []
    parts = []
    for sentence in SENTENCE_END.split(paragraph):
        tokens = sentence.split()
        parts += [sentence] if len(tokens) <= words else [" ".join(tokens[i : i + words]) for i in range(0, len(tokens), words)]
    return _pack(parts, words, " ")


def _pack(parts: list[str], words: int, separator: str) -> list[str]:
    """Consecutive parts joined while their words fit in `words` (a part is never split here)."""
    packed: list[str] = []
    current: list[str] = []
    size = 0
    for part in parts:
        n = len(part.split())
        if current and size + n > words:
            packed.append(separator.join(current))
            current, size = [], 0
        current.append(part)
        size += n
    if current:
        packed.append(separator.join(current))
    return packed


def chunk_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def prompt_messages(chunk: str, style: str) -> list[dict]:
    """The conversation that asks for one chunk's rephrasing."""
    if style not in PROMPTS:
        raise ConfigError(f"unknown style {style!r}: use one of {', '.join(STYLES)}")
    return [{"role": "user", "content": f"{PROMPTS[style]}\n\nText:\n{chunk}"}]


# ---- checks ---------------------------------------------------------------------------------


def check_reply(chunk: str, reply: str, style: str) -> str | None:
    """Why this reply is no rephrasing of the chunk, or None for a reply worth keeping:
    "empty", "too_short", "too_long", "echoes_prompt" (it repeats the instructions),
    "copies_text" (most of it is the chunk, word for word), or "duplicate_lines" /
    "repetition" (data cleaning's rules, which catch a small model's generation loops)."""
    words = reply.split()
    if not words:
        return "empty"
    ratio = len(words) / max(1, len(chunk.split()))
    if ratio < MIN_RATIO:
        return "too_short"
    if ratio > MAX_RATIO[style]:
        return "too_long"
    grams = _ngrams(reply)
    if _ngrams(PROMPTS[style]) & grams:
        return "echoes_prompt"
    if len(grams & _ngrams(chunk)) > MAX_COPIED * len(grams):
        return "copies_text"
    return failed_rule(reply, {"duplicate_lines", "repetition"})


def _ngrams(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + ECHO_WORDS]) for i in range(len(words) - ECHO_WORDS + 1)}


# ---- the loop -------------------------------------------------------------------------------


@dataclass
class Chunk:
    source: str
    index: int
    text: str

    @property
    def hash(self) -> str:
        return chunk_hash(self.text)


@dataclass
class RephraseStats:
    chunks: int = 0  # chunks considered (up to max_chunks)
    done_before: int = 0  # already in the output: skipped
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> count
    seconds: float = 0.0  # spent asking the backend
    output_tokens: int = 0

    @property
    def asked(self) -> int:
        return self.kept + sum(self.dropped.values())

    def to_dict(self) -> dict:
        return {"chunks": self.chunks, "done_before": self.done_before, "asked": self.asked, "kept": self.kept,
                "dropped": dict(self.dropped), "seconds": round(self.seconds, 3),
                "chunks_per_s": round(self.asked / self.seconds, 3) if self.seconds else None,
                "output_tokens": self.output_tokens}


def read_chunks(sources: list[str], chunk_words: int = 200, max_chunks: int | None = None,
                shakespeare_path: str | os.PathLike | None = None) -> list[Chunk]:
    """The chunks of every document of SOURCEs (read as `data prepare` reads them), in order,
    the first max_chunks of them."""
    if max_chunks is not None and max_chunks < 1:
        raise ConfigError(f"--max-chunks must be at least 1, got {max_chunks}")
    chunks: list[Chunk] = []
    for document in read_documents([resolve(spec, shakespeare_path) for spec in sources]):
        for index, text in enumerate(chunk_text(document.text, chunk_words)):
            chunks.append(Chunk(str(document.path), index, text))
            if max_chunks is not None and len(chunks) >= max_chunks:
                return chunks
    return chunks


def done_keys(out: Path) -> set[tuple[str, str, str]]:
    """(hash, style, backend) of every chunk already answered in `out`."""
    if not out.is_file():
        return set()
    # A line cut short when a run was killed is skipped (with a warning): that chunk is asked again.
    records = read_jsonl(out, skip_bad_lines=True, allow_empty=True)
    return {(r.get("hash"), r.get("style"), r.get("backend")) for r in records}


def rephrase(backend: Backend, chunks: list[Chunk], style: str, out: str | os.PathLike, batch: int = 8,
             max_tokens: int = 512, progress: bool = True) -> RephraseStats:
    """Rephrase every chunk not yet in `out` in `style`, `batch` prompts per backend.chat_many
    call (greedy), appending a record per chunk to `out` as each batch comes back."""
    if style not in PROMPTS:
        raise ConfigError(f"unknown style {style!r}: use one of {', '.join(STYLES)}")
    if batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {batch}")
    if max_tokens < 1:
        raise ConfigError(f"--max-tokens must be at least 1, got {max_tokens}")
    out = Path(out)
    done = done_keys(out)
    stats = RephraseStats(chunks=len(chunks))
    pending: list[Chunk] = []
    for chunk in chunks:
        key = (chunk.hash, style, backend.name)
        if key in done:
            stats.done_before += 1
        else:
            done.add(key)  # a chunk repeated in the corpus is asked once
            pending.append(chunk)
    with appending_jsonl(out) as append, tqdm(total=len(pending), desc=f"rephrase ({style})", unit="chunk",
                                              disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(pending), batch):
            group = pending[start : start + batch]
            began = time.perf_counter()
            replies = backend.chat_many([prompt_messages(c.text, style) for c in group], max_tokens=max_tokens)
            stats.seconds += time.perf_counter() - began
            for chunk, reply in zip(group, replies):
                text = reply.text.strip()
                reason = check_reply(chunk.text, text, style)
                record = {"source": chunk.source, "chunk": chunk.index, "hash": chunk.hash, "style": style,
                          "backend": backend.name, "original": chunk.text, "text": "" if reason else text,
                          "dropped": reason}
                if reason:
                    record["reply"] = text
                    stats.dropped[reason] += 1
                else:
                    stats.kept += 1
                stats.output_tokens += reply.usage.output_tokens
                append(record)
            bar.update(len(group))
    return stats
