"""Seeing tokens: coloured token boundaries, and compression statistics per file."""

from __future__ import annotations

from groklm.tokenizer.base import BaseTokenizer

# Background colours (black text) cycled over tokens: yellow, cyan, magenta, green, blue, red.
_BACKGROUNDS = ["43", "46", "45", "42", "44", "41"]
_RESET = "\x1b[0m"


def token_text(tokenizer: BaseTokenizer, token_id: int) -> str:
    """A token shown as text: invalid or partial UTF-8 as \\xNN escapes, line breaks and tabs visible."""
    text = tokenizer.token_bytes(token_id).decode("utf-8", errors="backslashreplace")
    return text.replace("\r", "\\r").replace("\t", "\\t").replace("\n", "\\n")


def render_tokens(tokenizer: BaseTokenizer, ids: list[int], color: bool = True) -> str:
    """The text with each token on its own background colour (or between '|' without colour),
    followed by the ids, each in the colour of its token."""
    pieces, labels = [], []
    for n, token_id in enumerate(ids):
        text = token_text(tokenizer, token_id)
        newline = "\n" if tokenizer.token_bytes(token_id).endswith(b"\n") else ""
        if color:
            style = f"\x1b[30;{_BACKGROUNDS[n % len(_BACKGROUNDS)]}m"
            # a line break token keeps its colour, then really breaks the line
            pieces.append(f"{style}{text}{_RESET}{newline}")
            labels.append(f"{style}{token_id}{_RESET}")
        else:
            pieces.append(f"{text}|{newline}")
            labels.append(str(token_id))
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
