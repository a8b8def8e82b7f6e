"""Our tokenizers written as a Hugging Face `tokenizer.json` (and read back from one), with the
model's conventions (end and start tokens, chat template) beside it in tokenizer_config.json.

The `tokenizers` library is not needed to write the file: tokenizer.json is plain JSON, and a
byte-level BPE is fully described by what our `Tokenizer` already holds: the regex that splits
text into chunks, the merges in priority order, the bytes of each token, the special tokens.

The one twist is how HF spells bytes. Its BPE works on strings, so GPT-2's byte-level scheme
gives each of the 256 byte values a printable stand-in character (`byte_alphabet`: space is
"Ġ", newline "Ċ"); a token's HF name is its bytes spelled with those characters.

A `CharTokenizer` maps to a BPE with no merges: every character is its own token, and the
"Fuse" decoder joins them back without spaces. A `MetaspaceTokenizer` (SentencePiece-style) is
written the way Llama 2's converted tokenizers are: Metaspace or Prepend/Replace, byte fallback.

Reading goes the other way through `groklm.tokenizer.imports.from_hf_dir`, which the
tokenizer package owns: tokenizer.json, and what the model directory says around it
(tokenizer_config.json, chat_template.jinja/.json, generation_config.json).
"""

from __future__ import annotations

from pathlib import Path

from groklm.errors import TokenizerError
from groklm.rundir import write_json
from groklm.tokenizer import BaseTokenizer, CharTokenizer, Conventions, Tokenizer
from groklm.tokenizer.bpe import SMOLLM_PATTERN
from groklm.tokenizer.imports import byte_alphabet, from_hf_dir
from groklm.tokenizer.metaspace import SPACE, MetaspaceTokenizer


def read_hf_tokenizer(path: str | Path) -> BaseTokenizer:
    """The tokenizer of a HF model directory (or of its tokenizer.json), with its conventions."""
    return from_hf_dir(path)


def write_hf_tokenizer(tokenizer, out_dir: str | Path, max_length: int) -> str:
    """Write tokenizer.json + tokenizer_config.json into `out_dir`; returns a note for the user."""
    if isinstance(tokenizer, Tokenizer):
        data = bpe_tokenizer_json(tokenizer)
    elif isinstance(tokenizer, MetaspaceTokenizer):
        data = metaspace_tokenizer_json(tokenizer)
    elif isinstance(tokenizer, CharTokenizer):
        data = char_tokenizer_json(tokenizer)
    else:
        return f"a {type(tokenizer).__name__} has no Hugging Face form, so no tokenizer was written"
    out_dir = Path(out_dir)
    write_json(out_dir / "tokenizer.json", data)
    write_json(out_dir / "tokenizer_config.json", tokenizer_config(tokenizer, max_length))
    return "tokenizer written (load it with AutoTokenizer)"


def regular_ids(tokenizer) -> list[int]:
    """The ids of ordinary (non-special) tokens, skipping holes in an imported numbering."""
    specials = set(tokenizer.special_tokens.values())
    ids = []
    for i in range(tokenizer.vocab_size):
        if i in specials:
            continue
        try:
            tokenizer.token_bytes(i)
        except TokenizerError:
            continue  # an id no token uses
        ids.append(i)
    return ids


def bpe_tokenizer_json(tokenizer: Tokenizer) -> dict:
    alphabet = byte_alphabet()

    def spell(token_id: int) -> str:
        return "".join(alphabet[b] for b in tokenizer.token_bytes(token_id))

    vocab = with_specials({spell(i): i for i in regular_ids(tokenizer)}, tokenizer)
    # Split into chunks with our regex first; then ByteLevel only respells bytes (its own
    # GPT-2 regex is switched off, or it would split the chunks a second time).
    pre_tokenizer = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": tokenizer.pattern}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ],
    }
    if tokenizer.pattern == SMOLLM_PATTERN:  # SmolLM's own form: digits alone, then GPT-2's regex
        pre_tokenizer["pretokenizers"] = [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        ]
    model = bpe_model(
        vocab,
        # "a b" strings rather than pairs: every tokenizers version reads them, and a
        # byte-level spelling never contains a real space.
        [f"{spell(left)} {spell(right)}" for left, right, _ in tokenizer.merges],
    )
    if tokenizer.unk_id is not None:  # a missing byte becomes this token (else it is dropped, as here)
        names = {i: t for t, i in vocab.items()}
        model.update(unk_token=names[tokenizer.unk_id], fuse_unk=tokenizer.fuse_unk)
    decoder = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    return assemble(tokenizer, pre_tokenizer, model, decoder)


def metaspace_tokenizer_json(tokenizer: MetaspaceTokenizer) -> dict:
    """SentencePiece-style: Metaspace (or Prepend + Replace) and byte fallback, as Llama 2's converted file."""
    vocab = with_specials(dict(tokenizer.vocab), tokenizer)
    normalizer = None
    if tokenizer.prefix == "normalizer":
        normalizer = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SPACE},
            {"type": "Replace", "pattern": {"String": " "}, "content": SPACE},
        ]}
        pre_tokenizer = None
    else:
        pre_tokenizer = {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": tokenizer.prefix, "split": tokenizer.split}
    model = bpe_model(vocab, [list(m) for m in tokenizer.merges])
    model.update(byte_fallback=tokenizer.byte_fallback, unk_token=tokenizer.unk_token, fuse_unk=tokenizer.fuse_unk)
    steps = [{"type": "Replace", "pattern": {"String": SPACE}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}]
    if tokenizer.strip_prefix:
        steps.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    data = assemble(tokenizer, pre_tokenizer, model, {"type": "Sequence", "decoders": steps})
    data["normalizer"] = normalizer
    return data


def char_tokenizer_json(tokenizer: CharTokenizer) -> dict:
    # No pre-tokenizer and no merges: the BPE model cuts the text into characters and looks
    # each one up. A character outside the vocabulary has no id, as in our CharTokenizer.
    model = bpe_model(with_specials({char: i for i, char in enumerate(tokenizer.chars)}, tokenizer), [])
    return assemble(tokenizer, None, model, {"type": "Fuse"})


def with_specials(vocab: dict[str, int], tokenizer) -> dict[str, int]:
    """The vocabulary with the special tokens in it too. `tokenizers` numbers an added token
    that the model's vocabulary lacks by counting past the vocabulary, ignoring its id."""
    for name, i in tokenizer.special_tokens.items():
        if vocab.setdefault(name, i) != i:
            raise TokenizerError(f"the special token {name!r} is also an ordinary token; tokenizer.json cannot hold both")
    return vocab


def bpe_model(vocab: dict[str, int], merges: list[str]) -> dict:
    return {
        "type": "BPE",
        "dropout": None,
        "unk_token": None,
        "continuing_subword_prefix": None,
        "end_of_word_suffix": None,
        "fuse_unk": False,
        "byte_fallback": False,
        "ignore_merges": False,  # True would take a whole chunk found in the vocab without merging
        "vocab": vocab,
        "merges": merges,
    }


def assemble(tokenizer, pre_tokenizer: dict | None, model: dict, decoder: dict) -> dict:
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": name, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for name, i in sorted(tokenizer.special_tokens.items(), key=lambda item: item[1])
        ],
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": None,  # add no BOS/EOS around text: our encode adds none either
        "decoder": decoder,
        "model": model,
    }


def tokenizer_config(tokenizer, max_length: int) -> dict:
    """tokenizer_config.json: tells `AutoTokenizer` which class to build, the special roles and
    the chat template: the tokenizer's conventions, so that reading it back gives them again."""
    conventions = getattr(tokenizer, "conventions", Conventions())
    roles = (conventions.bos_token, conventions.eos_token)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,
        "bos_token": conventions.bos_token,
        "eos_token": conventions.eos_token,
        "additional_special_tokens": [name for name in tokenizer.special_tokens if name not in roles],
    }
    if conventions.chat_template is not None:
        config["chat_template"] = conventions.chat_template
    return config
