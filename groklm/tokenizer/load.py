"""`load_tokenizer`: open any tokenizer groklm can read, by looking at the file."""

from __future__ import annotations

from pathlib import Path

from groklm.errors import TokenizerError
from groklm.tokenizer.base import FORMAT, BaseTokenizer, read_tokenizer_file, with_file_conventions
from groklm.tokenizer.bpe import Tokenizer
from groklm.tokenizer.char import CharTokenizer
from groklm.tokenizer.imports import from_hf_dir, from_tiktoken_file
from groklm.tokenizer.metaspace import MetaspaceTokenizer
from groklm.tokenizer.unigram import UnigramTokenizer


def load_tokenizer(location: str | Path, pattern: str = "gpt4") -> BaseTokenizer:
    """Load a tokenizer from a directory (its `tokenizer.json`) or a file.

    Reads groklm's own files (`"type"`: `"bpe"` -> `Tokenizer`, `"char"` -> `CharTokenizer`,
    `"metaspace"` -> `MetaspaceTokenizer`, `"unigram"` -> `UnigramTokenizer`), Hugging Face `tokenizer.json` files of byte-level and
    SentencePiece-style BPEs, and tiktoken `.tiktoken` rank files
    (which do not record their pre-split regex: `pattern` gives it, GPT-4's by default).
    """
    location = Path(location)
    if location.suffix == ".tiktoken" and location.is_file():
        return from_tiktoken_file(location, pattern=pattern)
    path, data = read_tokenizer_file(location)
    if data.get("format") != FORMAT and "model" in data:
        return from_hf_dir(path)  # with the conventions its directory records (tokenizer_config.json...)
    kinds = {"bpe": Tokenizer, "char": CharTokenizer, "metaspace": MetaspaceTokenizer, "unigram": UnigramTokenizer}
    kind = data.get("type")
    if kind not in kinds:
        raise TokenizerError(
            f"{path} is corrupt or not a tokenizer: its 'type' is {kind!r}, expected one of {sorted(kinds)}"
        )
    return with_file_conventions(kinds[kind].from_dict(data, str(path)), data, str(path))
