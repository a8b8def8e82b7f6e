"""The fast path (tiktoken) and the pure-Python reference encoder agree on real multi-MB text."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groklm.tokenizer import Tokenizer


def stdlib_text(n_bytes: int) -> str:
    """Python's own standard library sources, in sorted order: real text on every machine."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for path in sorted(root.glob("**/*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(text)
        size += len(text)
        if size >= n_bytes:
            break
    return "".join(parts)[:n_bytes]


@pytest.fixture(scope="module")
def text() -> str:
    return stdlib_text(2_600_000)


@pytest.fixture(scope="module", params=["gpt4", "gpt2"])
def tok(request, text) -> Tokenizer:
    return Tokenizer.train(text[:600_000], 2048, pattern=request.param)


def test_fast_and_reference_agree_on_megabytes(tok, text):
    held_out = text[600_000:]
    assert len(held_out.encode()) > 1_900_000
    fast = tok.encode(held_out)
    assert fast == tok.encode_reference(held_out)
    assert tok.decode(fast) == held_out
    assert len(held_out) / len(fast) > 2.5  # it compresses


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=80))
def test_fast_and_reference_agree_on_arbitrary_text(tok, sample):
    # regex (reference) and tiktoken's engine must split identically, whitespace and Unicode included
    assert tok.encode(sample) == tok.encode_reference(sample)


TRICKY = [" ", "  ", "\n", "\r\n", "\t", "\x0b", "\x0c", "\x85", "\xa0", "\u2028", "\u3000", "\u200b",
          "'s", "'LL", "'ve", "a", "Zé", "42", "12345", "٣", "½", "!", "...", "(", "🙂", "日本", "\u0301", "_x"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TRICKY), max_size=16).map("".join))
def test_fast_and_reference_agree_on_tricky_whitespace_and_scripts(tok, sample):
    assert tok.encode(sample) == tok.encode_reference(sample)
    assert tok.decode(tok.encode(sample)) == sample
