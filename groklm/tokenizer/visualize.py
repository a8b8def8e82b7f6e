"""Seeing tokens: coloured token boundaries, and what each file costs under several tokenizers
(a table, and a bar plot)."""

from __future__ import annotations

import codecs
from collections.abc import Callable

import regex

from groklm.tokenizer.base import BaseTokenizer

# Background colours (black text) cycled over tokens: yellow, cyan, magenta, green, blue, red.
_BACKGROUNDS = ["43", "46", "45", "42", "44", "41"]
_RESET = "\x1b[0m"
_ESCAPES = {"\r": "\\r", "\t": "\\t", "\n": "\\n"}


def visible(text: str) -> str:
    """`text` as a terminal can show it faithfully: printable characters of any script as
    themselves; line breaks and tabs as \\n, \\r, \\t; other invisible characters (controls,
    no-break spaces, zero-width joiners) as \\uXXXX; bytes that were not UTF-8 (decoded with
    surrogateescape) as \\xNN, so a byte and a character never look alike."""
    out = []
    for char in text:
        if char.isprintable() or char == " ":
            out.append(char)
        elif char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif "\udc80" <= char <= "\udcff":  # a byte that is not UTF-8
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        else:
            out.append(f"\\u{ord(char):04x}" if ord(char) < 0x10000 else f"\\U{ord(char):08x}")
    return "".join(out)


def _cut_short(data: bytes) -> bool:
    """Does `data` end with the first bytes of a UTF-8 character (valid so far, but incomplete)?"""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(data)
    except UnicodeDecodeError:
        return False
    return bool(decoder.getstate()[0])


def token_cells(tokenizer: BaseTokenizer, ids: list[int]) -> list[tuple[list[int], bytes]]:
    """The tokens grouped into cells of whole characters: (the cell's ids, its bytes).

    A byte-level token may hold part of a character (日 is three bytes, often split over two
    tokens); those tokens share one cell with the tokens that complete the character, so the
    character shows as itself (`visible`)."""
    cells: list[tuple[list[int], bytes]] = []
    group: list[int] = []
    data = b""
    for token_id in ids:
        group.append(token_id)
        data += tokenizer.token_bytes(token_id)
        if not _cut_short(data):
            cells.append((group, data))
            group, data = [], b""
    if group:
        cells.append((group, data))
    return cells


def render_tokens(tokenizer: BaseTokenizer, ids: list[int], color: bool = True) -> str:
    """The text with each token on its own background colour (or between '|' without colour),
    followed by the ids, each in the colour of its token. Tokens that split a character share a
    cell, and their ids are joined by '+'."""
    pieces, labels = [], []
    for n, (group, data) in enumerate(token_cells(tokenizer, ids)):
        # Only bytes that are not UTF-8 at all (or a text cut in the middle of a character) show as \xNN.
        text = visible(data.decode("utf-8", errors="surrogateescape"))
        newline = "\n" if data.endswith(b"\n") else ""
        label = "+".join(map(str, group))
        if color:
            style = f"\x1b[30;{_BACKGROUNDS[n % len(_BACKGROUNDS)]}m"
            # a line break token keeps its colour, then really breaks the line
            pieces.append(f"{style}{text}{_RESET}{newline}")
            labels.append(f"{style}{label}{_RESET}")
        else:
            pieces.append(f"{text}|{newline}")
            labels.append(label)
    body = "".join(pieces) if color else "|" + "".join(pieces)
    return f"{body}\n{' '.join(labels)}\n"


# A word: a run of non-space characters, except that in scripts written without spaces (Chinese
# characters, Japanese kana) every character counts as a word of its own.
_NO_SPACE_SCRIPTS = r"\p{Han}\p{Hiragana}\p{Katakana}"
WORD = regex.compile(rf"[{_NO_SPACE_SCRIPTS}]|[^\s{_NO_SPACE_SCRIPTS}]+")


def count_words(text: str) -> int:
    """Whitespace-separated words, each Chinese character or Japanese kana counted as one (see `WORD`)."""
    return sum(1 for _ in WORD.finditer(text))


def text_stats(encode: Callable[[str], list[int]], text: str) -> dict:
    """What `text` costs under a tokenizer (`encode` is its text -> ids): tokens per byte and per
    word (fewer is cheaper for a model), and bytes per token."""
    n_bytes = len(text.encode("utf-8"))
    n_words = count_words(text)
    n_tokens = len(encode(text))
    return {
        "bytes": n_bytes,
        "chars": len(text),
        "words": n_words,
        "tokens": n_tokens,
        "tokens_per_byte": round(n_tokens / n_bytes, 4) if n_bytes else 0.0,
        "bytes_per_token": round(n_bytes / n_tokens, 3) if n_tokens else 0.0,
        "tokens_per_word": round(n_tokens / n_words, 3) if n_words else 0.0,
    }


def add_relative_costs(rows: list[dict], reference: int) -> None:
    """Give each tokenizer's stats of each file a `relative_cost`: its tokens over the tokens the
    same tokenizer gives the reference file (`rows[reference]`). On texts that say the same thing
    in each language, this is what a language pays for the same content."""
    base = [stats["tokens"] for stats in rows[reference]["tokenizers"]]
    for row in rows:
        for stats, tokens in zip(row["tokenizers"], base):
            stats["relative_cost"] = round(stats["tokens"] / tokens, 3) if tokens else 0.0


def stats_table(rows: list[dict], tokenizer_names: list[str]) -> str:
    """A plain-text table: one row per file, one column group per tokenizer (with `relative_cost`
    when `add_relative_costs` set it)."""
    relative = "relative_cost" in rows[0]["tokenizers"][0]
    header = ["file", "bytes", "words"]
    for k in range(len(tokenizer_names)):
        tag = f"[{k + 1}]"
        header += [f"tokens{tag}", f"tok/byte{tag}", f"bytes/tok{tag}", f"tok/word{tag}"]
        if relative:
            header.append(f"cost{tag}")
    table = [header]
    for row in rows:
        line = [row["file"], str(row["bytes"]), str(row["words"])]
        for stats in row["tokenizers"]:
            line += [
                str(stats["tokens"]),
                f"{stats['tokens_per_byte']:.3f}",
                f"{stats['bytes_per_token']:.2f}",
                f"{stats['tokens_per_word']:.2f}",
            ]
            if relative:
                line.append(f"{stats['relative_cost']:.2f}x")
        table.append(line)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    out = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
        for r in table
    ]
    legend = [f"[{k + 1}] {name}" for k, name in enumerate(tokenizer_names)]
    if relative:
        legend.append("cost: tokens relative to the reference file, for the same tokenizer")
    return "\n".join(out + [""] + legend) + "\n"
