"""Seeing tokens: coloured token boundaries, and compression statistics per file."""

from __future__ import annotations

import codecs

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


def text_stats(tokenizer: BaseTokenizer, text: str) -> dict:
    """How well `tokenizer` compresses `text`: bytes per token and tokens per word (higher
    bytes/token and lower tokens/word mean cheaper text for a model)."""
    n_bytes = len(text.encode("utf-8"))
    n_words = len(text.split())
    n_tokens = len(tokenizer.encode(text))
    return {
        "bytes": n_bytes,
        "words": n_words,
        "tokens": n_tokens,
        "bytes_per_token": round(n_bytes / n_tokens, 3) if n_tokens else 0.0,
        "tokens_per_word": round(n_tokens / n_words, 3) if n_words else 0.0,
    }


def stats_table(rows: list[dict], tokenizer_names: list[str]) -> str:
    """A plain-text table: one row per file, one column group per tokenizer."""
    header = ["file", "bytes", "words"]
    for k in range(len(tokenizer_names)):
        tag = f"[{k + 1}]"
        header += [f"tokens{tag}", f"bytes/tok{tag}", f"tok/word{tag}"]
    if len(tokenizer_names) > 1:
        header.append("tokens[2]/[1]")
    table = [header]
    for row in rows:
        line = [row["file"], str(row["bytes"]), str(row["words"])]
        for stats in row["tokenizers"]:
            line += [str(stats["tokens"]), f"{stats['bytes_per_token']:.2f}", f"{stats['tokens_per_word']:.2f}"]
        if len(tokenizer_names) > 1:
            first, second = row["tokenizers"][0]["tokens"], row["tokenizers"][1]["tokens"]
            line.append(f"{second / first:.2f}x" if first else "-")
        table.append(line)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    out = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
        for r in table
    ]
    legend = [f"[{k + 1}] {name}" for k, name in enumerate(tokenizer_names)]
    return "\n".join(out + [""] + legend) + "\n"
