"""Heuristic quality rules: is one document prose worth training on?

Each rule measures one property of a document's text and names a reason to drop it. The
rules follow the spirit of the filters used to build Gopher's MassiveText and C4; the
thresholds are ours, set so that ordinary prose (a play's speeches, an article) passes and the
web's debris (menus, tables of numbers, keyword spam, cookie banners) does not. They are meant
for natural-language prose: source code fails several of them (symbols, short words, repeated
lines), so clean code with those rules switched off (`--no-rule NAME`).

A word is a whitespace-separated token (for word_length: a run of letters and digits). The
rules, in the order they are checked:

    boilerplate      lines of site furniture ("all rights reserved", "click here", "we use
                     cookies") are removed from the text; a document that is mostly such lines
                     is dropped (see `strip_boilerplate`)
    words            too short to teach anything, or so long it is surely many documents glued together
    word_length      mean word length outside a range natural languages keep to
    symbols          too many tokens that hold no letter or digit ("|", "###", "-->")
    digits           too large a share of digits: tables, logs, numeric dumps
    duplicate_lines  too much of the text is lines repeated within the document
    repetition       one word 2-gram or 3-gram covers too much of the text: spam, loops
"""

from __future__ import annotations

import re
from collections import Counter

# Fewer than 20 words is a fragment (a title, a caption, a menu) with too little context to
# learn from. Beyond a million words (a long novel is 200k-600k) one "document" is almost
# always many texts concatenated, and then the per-document rules below see only an average.
MIN_WORDS, MAX_WORDS = 20, 1_000_000
# English prose averages 4-5 letters a word. Below 3 the text is mostly initials, numbers or
# single letters; above 10 it is URLs, hashes, base64 or words run together.
MIN_MEAN_WORD_LENGTH, MAX_MEAN_WORD_LENGTH = 3.0, 10.0
# Tokens without a letter or digit ("|", "***", "-->", "..."): rare in prose (a dash here and
# there), the bulk of markup, ASCII art and tables.
MAX_SYMBOL_SHARE = 0.1
# Share of non-space characters that are digits: prose with dates and figures stays far below
# a fifth; spreadsheets, logs and number dumps sit above it.
MAX_DIGIT_SHARE = 0.2
# Share of the characters of non-blank lines that repeat an earlier line of the document.
# Counting characters, not lines, lets short repeated lines through (a play's speaker names,
# "Amen."), while the repeated navigation bars and templated rows of scraped pages are caught.
MAX_DUPLICATE_LINE_SHARE = 0.2
# The share of the words' characters covered by the most frequent word n-gram (counted only
# when it occurs more than once). Natural text stays well under these; "buy now buy now ..."
# and generation loops do not.
MAX_TOP_NGRAM_SHARE = {2: 0.2, 3: 0.18}

# Boilerplate: a short line holding one of these phrases is site furniture, not text. Phrases,
# not single words, so that "I do subscribe to that" in a play survives; the line must also be
# short, so that a paragraph that merely mentions cookies survives too.
BOILERPLATE_PHRASES = re.compile(
    r"\b(all rights reserved|click here|cookie policy|cookie settings|we use cookies|accept (all )?cookies"
    r"|privacy policy|terms of (use|service)|subscribe (now|today|to (our|the|my))|unsubscribe"
    r"|sign up for (our|the)|(enable|requires?) javascript|javascript is (disabled|required|not enabled)"
    r"|skip to (main )?content|back to top|share (this )?on (facebook|twitter)|powered by wordpress)\b",
    re.IGNORECASE,
)
# Words one of the phrases must contain: a plain substring test for them (a C loop) lets most
# documents skip the slower phrase search.
BOILERPLATE_KEYWORDS = ("reserved", "click", "cookie", "privacy", "terms of", "subscribe", "sign up", "javascript",
                        "skip to", "back to top", "share", "powered by")
BOILERPLATE_MAX_WORDS = 20
MOSTLY_BOILERPLATE = 0.5  # a document whose non-blank lines are at least half boilerplate is dropped

QUALITY_RULES = ("words", "word_length", "symbols", "digits", "duplicate_lines", "repetition")

# The measures are regular expressions over the whole text, not Python loops over its
# characters: cleaning runs at the speed of the regex engine.
_LETTER_RUN = re.compile(r"[^\W_]+")
_SYMBOL_WORD = re.compile(r"(?<!\S)(?:[^\w\s]|_)+(?!\S)")  # a whitespace-separated token without a letter or digit
_DIGIT = re.compile(r"\d")


def is_boilerplate(line: str) -> bool:
    return len(line.split()) <= BOILERPLATE_MAX_WORDS and BOILERPLATE_PHRASES.search(line) is not None


def strip_boilerplate(text: str) -> tuple[str, list[str], bool]:
    """(the text without its boilerplate lines, the lines removed, whether the document is
    mostly boilerplate and should be dropped whole)."""
    lower = text.lower()
    if not any(word in lower for word in BOILERPLATE_KEYWORDS) or BOILERPLATE_PHRASES.search(text) is None:
        return text, [], False
    lines = text.split("\n")
    removed = [line for line in lines if is_boilerplate(line)]
    if not removed:
        return text, [], False
    content = sum(1 for line in lines if line.strip())
    kept = "\n".join(line for line in lines if not is_boilerplate(line))
    return kept, removed, len(removed) >= MOSTLY_BOILERPLATE * content or not kept.strip()


def failed_rule(text: str, rules: set[str]) -> str | None:
    """The first of QUALITY_RULES among `rules` that `text` fails, or None if it passes them all."""
    words = text.split()
    for rule in QUALITY_RULES:
        if rule in rules and not _CHECKS[rule](text, words):
            return rule
    return None


def _word_count_ok(text: str, words: list[str]) -> bool:
    return MIN_WORDS <= len(words) <= MAX_WORDS


def _word_length_ok(text: str, words: list[str]) -> bool:
    runs = _LETTER_RUN.findall(text)
    return bool(runs) and MIN_MEAN_WORD_LENGTH <= sum(map(len, runs)) / len(runs) <= MAX_MEAN_WORD_LENGTH


def _symbols_ok(text: str, words: list[str]) -> bool:
    return len(_SYMBOL_WORD.findall(text)) <= MAX_SYMBOL_SHARE * max(len(words), 1)


def _digits_ok(text: str, words: list[str]) -> bool:
    return len(_DIGIT.findall(text)) <= MAX_DIGIT_SHARE * max(sum(map(len, words)), 1)


def _duplicate_lines_ok(text: str, words: list[str]) -> bool:
    seen, total, repeated = set(), 0, 0
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        total += len(line)
        if line in seen:
            repeated += len(line)
        seen.add(line)
    return repeated <= MAX_DUPLICATE_LINE_SHARE * max(total, 1)


def _repetition_ok(text: str, words: list[str]) -> bool:
    lowered = text.lower().split()
    chars = sum(map(len, lowered))
    for n, limit in MAX_TOP_NGRAM_SHARE.items():
        if len(lowered) < n:
            continue
        (gram, count), = Counter(zip(*(lowered[i:] for i in range(n)))).most_common(1)
        if count > 1 and count * sum(map(len, gram)) > limit * chars:
            return False
    return True


_CHECKS = {"words": _word_count_ok, "word_length": _word_length_ok, "symbols": _symbols_ok, "digits": _digits_ok,
           "duplicate_lines": _duplicate_lines_ok, "repetition": _repetition_ok}
