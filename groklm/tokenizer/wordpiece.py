"""BERT's tokenizer: a text clean-up, a split into words and punctuation, then WordPiece.

BPE (bpe.py) *builds* tokens bottom-up by merging pairs; WordPiece *cuts* each word top-down:
take the longest vocabulary entry that starts the word, then the longest entry (spelled with a
"##" prefix, meaning "glued to the previous piece") that starts the rest, and so on:

    "unaffable" -> un ##aff ##able        a word with no cut at all -> [UNK] (the whole word)

Before that, BERT normalizes the text in four steps, in this order (it matters: "İ" loses its
dot to step 3 before step 4 lowercases it):

  1. clean: drop control/format characters, turn every kind of whitespace into a space;
  2. put spaces around CJK ideographs, so each becomes a word of its own (Chinese has no spaces);
  3. strip accents: decompose (NFD) and drop the combining marks ("café" -> "cafe");
  4. lowercase, one character at a time (so a final "Σ" becomes "σ", never "ς").

Then it splits at whitespace and isolates every punctuation character ("don't" -> don ' t).
Special tokens written literally in the text ("[MASK]") are matched first and kept whole.

Everything is read from a Hugging Face `tokenizer.json` (model type "WordPiece"); the tests
check the ids token for token against the `tokenizers` library.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import regex

from groklm.errors import TokenizerError

# CJK Unified Ideographs and their extensions, as BERT's normalizer lists them.
CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)  # fmt: skip
CJK = regex.compile("([" + "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in CJK_RANGES) + "])")
# Control, format, private-use and surrogate characters (but tab, newline and return count as
# whitespace), the NUL character and U+FFFD are dropped; unassigned code points are kept.
CONTROL = regex.compile(r"(?![\t\n\r])[\p{Cc}\p{Cf}\p{Co}\p{Cs}\x00\ufffd]")
WHITESPACE = regex.compile(r"\p{White_Space}")
COMBINING_MARK = regex.compile(r"\p{Mn}")
# A word is a run of anything but whitespace and punctuation; each punctuation mark stands
# alone. BERT's punctuation is Unicode's P* classes plus all ASCII symbols such as $ + < ^ |.
ASCII_PUNCTUATION = r"!-/:-@\[-`{-~"
PRE_TOKEN = regex.compile(rf"[^\p{{White_Space}}\p{{P}}{ASCII_PUNCTUATION}]+|[\p{{P}}{ASCII_PUNCTUATION}]")


class WordPieceTokenizer:
    """Text -> WordPiece ids, as BERT-family models (and sentence-transformers) expect them."""

    def __init__(
        self,
        vocab: dict[str, int],
        special_tokens: dict[str, int],
        *,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        clean_text: bool = True,
        split_cjk: bool = True,
        prefix: str = "##",
        max_word_chars: int = 100,
        unk: str = "[UNK]",
        cls: str = "[CLS]",
        sep: str = "[SEP]",
        pad: str = "[PAD]",
    ):
        self.vocab, self.special_tokens = vocab, special_tokens
        self.lowercase, self.clean_text, self.split_cjk = lowercase, clean_text, split_cjk
        # BERT's convention: accents go whenever case goes, unless the config says otherwise.
        self.strip_accents = lowercase if strip_accents is None else strip_accents
        self.prefix, self.max_word_chars = prefix, max_word_chars
        for name in (unk, cls, sep, pad):
            if name not in vocab:
                raise TokenizerError(f"the WordPiece vocabulary has no {name} token")
        self.unk_id, self.cls_id, self.sep_id, self.pad_id = vocab[unk], vocab[cls], vocab[sep], vocab[pad]
        # Longest first, so "[MASK]" wins over a shorter special that is its prefix.
        names = sorted(special_tokens, key=len, reverse=True)
        self._special = regex.compile("(" + "|".join(map(regex.escape, names)) + ")") if names else None
        self._word_cache: dict[str, list[int]] = {}

    @classmethod
    def from_hf_file(cls, path: str | Path) -> WordPieceTokenizer:
        """Read a Hugging Face tokenizer.json whose model is WordPiece (BERT and its family)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            raise TokenizerError(f"{path} does not exist") from error
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise TokenizerError(f"{path} is not valid JSON: {error}") from error
        model = data.get("model") or {}
        if model.get("type") != "WordPiece":
            raise TokenizerError(f"{path} holds a {model.get('type')!r} tokenizer, not WordPiece (BERT family)")
        normalizer = data.get("normalizer") or {}
        if normalizer.get("type") not in ("BertNormalizer", None):
            raise TokenizerError(f"{path}: normalizer {normalizer.get('type')!r} is not supported (BertNormalizer only)")
        return cls(
            model["vocab"],
            {t["content"]: t["id"] for t in data.get("added_tokens", []) if t.get("special")},
            lowercase=normalizer.get("lowercase", False),
            strip_accents=normalizer.get("strip_accents"),
            clean_text=normalizer.get("clean_text", False),
            split_cjk=normalizer.get("handle_chinese_chars", False),
            prefix=model.get("continuing_subword_prefix", "##"),
            max_word_chars=model.get("max_input_chars_per_word", 100),
            unk=model.get("unk_token", "[UNK]"),
        )

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    # ---- text -> words ----------------------------------------------------------------------

    def normalize(self, text: str) -> str:
        if self.clean_text:
            text = WHITESPACE.sub(" ", CONTROL.sub("", text))
        if self.split_cjk:
            text = CJK.sub(r" \1 ", text)
        if self.strip_accents and not text.isascii():
            text = COMBINING_MARK.sub("", unicodedata.normalize("NFD", text))
        if self.lowercase:
            # str.lower() on the whole string would turn a word-final "Σ" into "ς"; BERT maps
            # characters one by one.
            text = text.lower() if "Σ" not in text else "".join(c.lower() for c in text)
        return text

    def words(self, text: str) -> list[str]:
        """The words and punctuation marks WordPiece sees, after normalization."""
        return PRE_TOKEN.findall(self.normalize(text))

    # ---- words -> ids -----------------------------------------------------------------------

    def word_ids(self, word: str) -> list[int]:
        """The ids of one word (memoized: words repeat, Zipf's law)."""
        ids = self._word_cache.get(word)
        if ids is None:
            ids = self._cut(word)
            if len(self._word_cache) < 500_000:  # bound the memory on endless new words
                self._word_cache[word] = ids
        return ids

    def _cut(self, word: str) -> list[int]:
        """Greedy longest-match-first cut of one word; [UNK] if any part has no match."""
        if len(word) > self.max_word_chars:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    start = end
                    break
            else:
                return [self.unk_id]
        return ids

    def encode(self, text: str) -> list[int]:
        """Ids of `text`, without [CLS]/[SEP]. Special-token text ("[SEP]") maps to its id."""
        parts = self._special.split(text) if self._special else [text]
        ids: list[int] = []
        for i, part in enumerate(parts):
            if i % 2:  # the split's odd parts are the special tokens it matched
                ids.append(self.special_tokens[part])
                continue
            for word in self.words(part):
                ids.extend(self.word_ids(word))
        return ids

    def encode_for_model(self, text: str, max_length: int) -> list[int]:
        """[CLS] ids [SEP], the ids cut so that the whole fits in `max_length` tokens."""
        return [self.cls_id, *self.encode(text)[: max_length - 2], self.sep_id]

    def count(self, text: str) -> int:
        """Number of tokens in `text` (without [CLS]/[SEP])."""
        return len(self.encode(text))
