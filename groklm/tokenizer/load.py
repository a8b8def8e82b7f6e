"""`load_tokenizer`: open any tokenizer groklm can read, by looking at the file."""

from __future__ import annotations

from pathlib import Path

from groklm.errors import TokenizerError
from groklm.tokenizer.base import FORMAT, BaseTokenizer, read_tokenizer_file, with_file_conventions
from groklm.tokenizer.bpe import Tokenizer
from groklm.tokenizer.char import CharTokenizer
from groklm.tokenizer.imports import from_hf_dict, from_tiktoken_file


def load_tokenizer(location: str | Path, pattern: str = "gpt4") -> BaseTokenizer:
    """Load a tokenizer from a directory (its `tokenizer.json`) or a file.

    Reads groklm's own files (`"type"`: `"bpe"` -> `Tokenizer`, `"char"` -> `CharTokenizer`),
    Hugging Face `tokenizer.json` files of byte-level BPEs, and tiktoken `.tiktoken` rank files
    (which do not record their pre-split regex: `pattern` gives it, GPT-4's by default).
    """
    location = Path(location)
    if location.suffix == ".tiktoken" and location.is_file():
        return from_tiktoken_file(location, pattern=pattern)
    path, data = read_tokenizer_file(location)
    if data.get("format") != FORMAT and "model" in data:
        return from_hf_dict(data, str(path))
    kinds = {"bpe": Tokenizer, "char": CharTokenizer}
    kind = data.get("type")
    if kind not in kinds:
        raise TokenizerError(
            f"{path} is corrupt or not a tokenizer: its 'type' is {kind!r}, expected 'bpe' or 'char'"
        )
    return with_file_conventions(kinds[kind].from_dict(data, str(path)), data, str(path))
