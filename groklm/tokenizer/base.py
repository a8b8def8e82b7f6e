"""What every groklm tokenizer offers, the streaming decoder, and the file on disk.

A tokenizer directory holds one file, `tokenizer.json`, whose `"type"` field says which class
reads it (`"bpe"` or `"char"`). `load_tokenizer(dir)` dispatches on it.

Every tokenizer also carries its model's *conventions* (`Conventions`): which special token
ends a document or a reply (`eos_token`), which one begins a sequence (`bos_token`), and the
model's Jinja chat template. groklm's own tokenizers use `<|endoftext|>`, no BOS and the
built-in ChatML; an imported model keeps its own, so that a conversation becomes the tokens
that model was trained on (tokenizer/chat.py).
"""

from __future__ import annotations

import codecs
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import regex

from groklm.errors import TokenizerError
from groklm.rundir import atomic_path

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Present in every tokenizer, in this order, after the regular vocabulary.
DEFAULT_SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)

FILE_NAME = "tokenizer.json"
FORMAT = "groklm-tokenizer"
FORMAT_VERSION = 1
REPLACEMENT = "\ufffd".encode("utf-8")  # what an id outside the vocabulary decodes to


@dataclass(frozen=True)
class Conventions:
    """How a model uses its special tokens: stored in tokenizer.json beside the vocabulary."""

    eos_token: str = ENDOFTEXT  # ends a document (pretraining) and a reply (a stop token)
    bos_token: str | None = None  # begins a sequence, for models trained with one
    chat_template: str | None = None  # the model's Jinja chat template; None: groklm's ChatML
    # More tokens that end a reply (e.g. Llama 3's <|eom_id|> beside <|eot_id|>).
    stop_tokens: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: object, special_tokens: dict[str, int], source: str) -> Conventions:
        """Read and check the `"conventions"` entry of a tokenizer file (absent: the defaults)."""
        if data is None:
            data = {}
        if not isinstance(data, dict) or set(data) - set(cls.__dataclass_fields__):
            raise TokenizerError(f"{source} is corrupt: 'conventions' must be an object with keys {sorted(cls.__dataclass_fields__)}")
        conventions = cls(**{**data, "stop_tokens": tuple(data.get("stop_tokens") or ())})
        conventions.check(special_tokens, source)
        return conventions

    def check(self, special_tokens: dict[str, int], source: str) -> None:
        for name in (self.eos_token, self.bos_token, *self.stop_tokens):
            if name is not None and name not in special_tokens:
                raise TokenizerError(f"{source}: {name!r} is named in the conventions but is not a special token")
        if self.chat_template is not None and not isinstance(self.chat_template, str):
            raise TokenizerError(f"{source}: the chat template must be a string")

    def to_dict(self) -> dict:
        return {**asdict(self), "stop_tokens": list(self.stop_tokens)}


class BaseTokenizer(ABC):
    """The interface shared by `Tokenizer` (byte-level BPE) and `CharTokenizer`.

    Subclasses set `special_tokens` (str -> id) and implement `encode`, `decode_bytes`,
    `token_bytes`, `vocab_size`, `to_dict` and `from_dict`.
    """

    type: str = ""
    special_tokens: dict[str, int]
    conventions: Conventions = Conventions()

    # --- to implement -----------------------------------------------------------------------
    @abstractmethod
    def encode(self, text: str, allowed_special: Iterable[str] | str = ()) -> list[int]:
        """Token ids of `text`; special-token text counts as special only if `allowed_special` says so."""

    @abstractmethod
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes that `ids` stand for; an id outside the vocabulary gives U+FFFD's bytes."""

    @abstractmethod
    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (TokenizerError for an id outside the vocabulary)."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids: every id is below it."""

    @abstractmethod
    def to_dict(self) -> dict:
        """The JSON-ready contents of tokenizer.json."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> BaseTokenizer:
        """The tokenizer described by `to_dict`'s output (`source` names it in errors)."""

    # --- shared -------------------------------------------------------------------------------
    def encode_continuation(self, text: str, allowed_special: Iterable[str] | str = ()) -> list[int]:
        """Ids of `text` where it continues text before it (the next piece of a rendered chat)
        instead of starting a text. Most tokenizers encode a piece the same wherever it stands;
        a SentencePiece-style one puts its "▁" prefix only where a text starts (metaspace.py)."""
        return self.encode(text, allowed_special)

    def encode_batch(self, texts: Sequence[str], allowed_special: Iterable[str] | str = ()) -> list[list[int]]:
        return [self.encode(text, allowed_special) for text in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`. Never raises: a UTF-8 sequence cut short becomes U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        """A decoder to feed ids one at a time (e.g. while sampling); see `StreamDecoder`."""
        return StreamDecoder(self)

    @property
    def eot_id(self) -> int:
        """The id of the end-of-text token (`conventions.eos_token`), which separates documents."""
        return self.special_tokens[self.conventions.eos_token]

    def with_conventions(self, conventions: Conventions) -> BaseTokenizer:
        """Give this tokenizer its model's conventions (checked against its special tokens)."""
        conventions.check(self.special_tokens, repr(self))
        self.conventions = conventions
        return self

    def _allowed(self, allowed_special: Iterable[str] | str) -> set[str]:
        """Check and normalise an `allowed_special` argument ("all", or some special tokens)."""
        if allowed_special == "all":
            return set(self.special_tokens)
        if isinstance(allowed_special, str):
            allowed_special = {allowed_special}
        allowed = set(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise TokenizerError(
                f"allowed_special names {sorted(unknown)}, which are not special tokens of this "
                f"tokenizer (it has {sorted(self.special_tokens)})"
            )
        return allowed

    def save(self, directory: str | Path) -> Path:
        """Write `directory/tokenizer.json` (the directory is created). Returns the file's path."""
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / FILE_NAME
            data = self.to_dict()
            if self.conventions != Conventions():
                data["conventions"] = self.conventions.to_dict()
            with atomic_path(path) as tmp:  # a crash never leaves half a tokenizer behind
                tmp.write_text(dump_json(data), encoding="utf-8")
        except OSError as e:
            raise TokenizerError(f"cannot write the tokenizer to {directory}: {e.strerror or e}") from None
        return path

    @classmethod
    def load(cls, directory: str | Path) -> BaseTokenizer:
        """Read a tokenizer saved with `save`; it must be of this class's type."""
        path, data = read_tokenizer_file(directory)
        if data.get("type") != cls.type:
            raise TokenizerError(
                f"{path} holds a {data.get('type')!r} tokenizer, not {cls.type!r}; use load_tokenizer()"
            )
        return with_file_conventions(cls.from_dict(data, str(path)), data, str(path))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, special_tokens={len(self.special_tokens)})"


class StreamDecoder:
    """Turns ids into text as they arrive, emitting only complete UTF-8 characters.

    `push(id)` returns the text that the new token completes (often "", when a character's
    bytes are split across tokens); `flush()` returns what is left, an incomplete tail as U+FFFD.
    Invalid bytes become U+FFFD as soon as they are known to be invalid.
    """

    def __init__(self, tokenizer: BaseTokenizer):
        self._tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._decoder.decode(self._tokenizer.decode_bytes([token_id]))

    def flush(self) -> str:
        text = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return text


# --- the file -------------------------------------------------------------------------------


def dump_json(data: dict) -> str:
    """JSON with one top-level key per line and one list item (e.g. one merge) per line."""
    lines = ["{"]
    keys = list(data)
    for n, key in enumerate(keys):
        value = data[key]
        comma = "," if n < len(keys) - 1 else ""
        if isinstance(value, list) and value:
            items = [json.dumps(item, ensure_ascii=False) for item in value]
            body = ",\n    ".join(items)
            lines.append(f"  {json.dumps(key)}: [\n    {body}\n  ]{comma}")
        elif isinstance(value, dict) and value:
            items = [f"{json.dumps(k, ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False)}" for k, v in value.items()]
            body = ",\n    ".join(items)
            lines.append(f"  {json.dumps(key)}: {{\n    {body}\n  }}{comma}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def read_tokenizer_file(location: str | Path) -> tuple[Path, dict]:
    """Find and parse a tokenizer file: `location` is its directory or the file itself."""
    location = Path(location)
    path = location / FILE_NAME if location.is_dir() else location
    if not path.exists():
        if location.is_dir():
            raise TokenizerError(
                f"{location} has no {FILE_NAME}; train one with `groklm tokenizer train --out {location}`"
            )
        raise TokenizerError(f"tokenizer not found: {location}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerError(f"cannot read {path}: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TokenizerError(
            f"{path} is corrupt (invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}); "
            "re-create it with `groklm tokenizer train`"
        ) from None
    if not isinstance(data, dict):
        raise TokenizerError(f"{path} is corrupt: expected a JSON object at the top level")
    return path, data


def with_file_conventions(tokenizer: BaseTokenizer, data: dict, source: str) -> BaseTokenizer:
    """`tokenizer` (just read from `data`) with the conventions that the file records."""
    tokenizer.conventions = Conventions.from_dict(data.get("conventions"), tokenizer.special_tokens, source)
    return tokenizer


def check_special_tokens(value, source: str) -> dict[str, int]:
    """Validate a `special_tokens` mapping read from a file.

    groklm's own tokenizers always have the three defaults (`check_new_specials` adds them when
    one is trained); an imported one keeps exactly the special tokens of its model, at their
    ids, so none of the three is required here.
    """
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in value.items()
    ):
        raise TokenizerError(f"{source} is corrupt: 'special_tokens' must map non-empty strings to ids >= 0")
    if len(set(value.values())) != len(value):
        raise TokenizerError(f"{source} is corrupt: two special tokens share an id")
    return dict(value)


def check_new_specials(special_tokens: Iterable[str] | None) -> list[str]:
    """The three default special tokens followed by the caller's extra ones (deduplicated)."""
    extra = list(special_tokens or [])
    for token in extra:
        if not isinstance(token, str) or not token:
            raise TokenizerError(f"special tokens must be non-empty strings, got {token!r}")
    return list(dict.fromkeys([*DEFAULT_SPECIAL_TOKENS, *extra]))


def ids_for_learning(vocab_size, n_special: int, what: str, minimum: int) -> int:
    """The ids a trainer may learn (vocab_size - 256 byte tokens - the special tokens), or a
    TokenizerError when vocab_size is not an integer or leaves fewer than `minimum`."""
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise TokenizerError(f"vocab size must be an integer, not {vocab_size!r}")
    left = vocab_size - 256 - n_special
    if left < minimum:
        raise TokenizerError(f"vocab size {vocab_size} is too small: {what} needs 256 byte tokens + {n_special} "
                             f"special tokens = {256 + n_special} ids" + (f" and at least {minimum} more" if minimum else ""))
    return left


class SpecialSplitter:
    """Cuts text at occurrences of allowed special tokens (the longest match wins), one compiled
    regex per set of allowed tokens."""

    def __init__(self):
        self._patterns: dict[frozenset, regex.Pattern] = {}

    def split(self, text: str, allowed: set[str]) -> Iterator[tuple[int, str, bool]]:
        """Yield (offset, piece, is_special) covering `text`, empty pieces left out."""
        if not allowed:
            if text:
                yield 0, text, False
            return
        key = frozenset(allowed)
        if key not in self._patterns:
            alternatives = sorted(allowed, key=len, reverse=True)
            self._patterns[key] = regex.compile("|".join(regex.escape(s) for s in alternatives))
        start = 0
        for match in self._patterns[key].finditer(text):
            if match.start() > start:
                yield start, text[start : match.start()], False
            yield match.start(), match.group(), True
            start = match.end()
        if start < len(text):
            yield start, text[start:], False


def decode_with_table(table: list[bytes], ids) -> bytes:
    """The bytes of `ids` looked up in a decode table; an id outside it gives U+FFFD's bytes."""
    ids = ids_list(ids)
    try:  # the common case, valid ids, as one list comprehension
        if ids and min(ids) < 0:
            raise IndexError
        return b"".join([table[i] for i in ids])
    except (IndexError, TypeError):
        n = len(table)
        return b"".join(table[i] if type(i) is int and 0 <= i < n else REPLACEMENT for i in ids)


def is_id(value) -> bool:
    """A token id: an int (not a bool) >= 0."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def table_lookup(table: list[bytes | None], token_id: int) -> bytes:
    """The bytes of `token_id` in a decode table where None marks an id no token uses."""
    if type(token_id) is not int or not 0 <= token_id < len(table) or table[token_id] is None:
        raise TokenizerError(f"{token_id!r} is not a token id of this tokenizer (vocab size {len(table)})")
    return table[token_id]


def ids_list(ids) -> list[int]:
    """Accept a list, tuple, numpy array or torch tensor of ids."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
        return ids if isinstance(ids, list) else [ids]
    return ids if isinstance(ids, list) else list(ids)
