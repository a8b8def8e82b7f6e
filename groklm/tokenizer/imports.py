"""Reading vocabularies made elsewhere, offline: tiktoken rank files, HF `tokenizer.json`, GGUF metadata.

Each becomes a groklm tokenizer with the original ids, so encoding matches the original library
and the ids match the model's embedding rows. An imported tokenizer keeps exactly its model's
special tokens, at their ids (none of groklm's three defaults is added to a model's vocabulary),
and records which of them ends a text and which begins one (`Conventions`).

- tiktoken `.tiktoken`: one `base64(token bytes) rank` per line. The rank is both the id and
  the merge priority; the merges themselves are not stored, so we recover each one: a token's
  merge is the pair that BPE with only lower ranks leaves when run on the token's bytes.
- HF `tokenizer.json` with a `BPE` model and a `ByteLevel` pre-tokenizer (GPT-2 style): tokens
  are written in GPT-2's byte alphabet (each byte shown as a printable character, e.g. space
  as "Ġ"), merges are pairs of such strings in priority order, and ids are arbitrary (the
  byte alphabet is not numbered in byte order), so priority and ids are kept apart. A
  vocabulary may lack some byte tokens (bpe.py says what happens to those bytes).
- HF `tokenizer.json` of a SentencePiece-style BPE ("▁" for spaces, `<0xXX>` byte fallback:
  Llama 2, Mistral, TinyLlama): a `MetaspaceTokenizer` (metaspace.py).
- GGUF (llama.cpp's format) stores the vocabulary as metadata lists: `from_gguf_vocab` takes
  them as plain lists (interop/gguf.py reads the file) and builds the tokenizer that
  transformers builds from the same file.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path

from groklm.errors import TokenizerError
from groklm.tokenizer.base import DEFAULT_SPECIAL_TOKENS, ENDOFTEXT, BaseTokenizer, Conventions
from groklm.tokenizer.bpe import GPT2_PATTERN, SMOLLM_PATTERN, Tokenizer
from groklm.tokenizer.metaspace import SPACE, MetaspaceTokenizer


def byte_alphabet() -> list[str]:
    """GPT-2's printable stand-in for each byte value (index = byte).

    Bytes that are visible Latin-1 characters stand for themselves; the other 68 (controls,
    space, soft hyphen...) get the characters from U+0100 on, in byte order.
    """
    visible = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    alphabet, extra = [], 0
    for b in range(256):
        if b in visible:
            alphabet.append(chr(b))
        else:
            alphabet.append(chr(256 + extra))
            extra += 1
    return alphabet


# --- tiktoken --------------------------------------------------------------------------------


def read_tiktoken_ranks(path: str | Path) -> dict[bytes, int]:
    path = Path(path)
    try:
        lines = path.read_bytes().splitlines()
    except OSError as e:
        raise TokenizerError(f"cannot read {path}: {e.strerror or e}") from None
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError:
            raise TokenizerError(f"{path}:{number} is not a tiktoken rank line ('<base64 token> <rank>')") from None
    if not ranks:
        raise TokenizerError(f"{path} holds no tokens")
    return ranks


def write_tiktoken_ranks(ranks: dict[bytes, int], path: str | Path) -> None:
    lines = [f"{base64.b64encode(token).decode()} {rank}" for token, rank in sorted(ranks.items(), key=lambda kv: kv[1])]
    Path(path).write_text("\n".join(lines) + "\n")


def _split_by_lower_ranks(data: bytes, ranks: dict[bytes, int], limit: int) -> list[bytes]:
    """tiktoken's BPE on `data`, using only tokens ranked below `limit`."""
    parts = [bytes([b]) for b in data]
    while len(parts) > 1:
        best_rank, best_i = limit, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1], limit)
            if rank < best_rank:
                best_rank, best_i = rank, i
        if best_i < 0:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


def from_tiktoken_ranks(
    ranks: dict[bytes, int],
    pattern: str = "gpt4",
    special_tokens: dict[str, int] | None = None,
    source: str = "tiktoken ranks",
) -> Tokenizer:
    """A `Tokenizer` equal to `tiktoken.Encoding(pat_str=pattern, mergeable_ranks=ranks, ...)`."""
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise TokenizerError(f"{source} lacks single-byte tokens (e.g. byte {missing[0]}), so it is not a byte-level BPE")
    if len(set(ranks.values())) != len(ranks):
        raise TokenizerError(f"{source} gives two tokens the same rank")
    byte_ids = [ranks[bytes([b])] for b in range(256)]
    merges, extra = [], {}
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = _split_by_lower_ranks(token, ranks, rank)
        if len(parts) == 2:
            merges.append((ranks[parts[0]], ranks[parts[1]], rank))
        else:  # reachable only as a whole chunk; kept so its id decodes
            extra[rank] = token
    specials = dict(special_tokens or {})
    next_id = max(ranks.values()) + 1
    for name in DEFAULT_SPECIAL_TOKENS:
        if name not in specials:
            specials[name] = max([next_id - 1, *specials.values()]) + 1
    return Tokenizer(merges, pattern=pattern, special_tokens=specials, byte_ids=byte_ids, extra_tokens=extra, source=source)


def from_tiktoken_file(path: str | Path, pattern: str = "gpt4", special_tokens: dict[str, int] | None = None) -> Tokenizer:
    """Load a `.tiktoken` rank file. The file does not record its pre-split regex: pass `pattern`."""
    return from_tiktoken_ranks(read_tiktoken_ranks(path), pattern, special_tokens, str(path))


# --- Hugging Face tokenizer.json -----------------------------------------------------------------

# Tokens that end a text in common vocabularies: the guess when nothing names the EOS token.
KNOWN_EOS = (ENDOFTEXT, "</s>", "<|end_of_text|>", "<|eot_id|>", "<|im_end|>", "<eos>", "<|end|>")


def from_hf_file(path: str | Path, *, eos_token: str | None = None, bos_token: str | None = None) -> BaseTokenizer:
    """Read a HF `tokenizer.json` (or the one in a directory); see `from_hf_dict`."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise TokenizerError(f"cannot read {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise TokenizerError(f"{path} is not a tokenizer.json (expected a JSON object)")
    return from_hf_dict(data, str(path), eos_token=eos_token, bos_token=bos_token)


def from_hf_dict(
    data: dict, source: str = "tokenizer.json", *, eos_token: str | None = None, bos_token: str | None = None
) -> BaseTokenizer:
    """A tokenizer that encodes like the HF `tokenizers` library does with this file.

    A byte-level BPE becomes a `Tokenizer`, a SentencePiece-style one a `MetaspaceTokenizer`.
    Every added token keeps its id and becomes a special token. `eos_token`/`bos_token` (from
    tokenizer_config.json, when the caller has one) name the model's end and start tokens;
    otherwise the end token is guessed among the usual names and the start token is the one
    that the post-processor puts before the text (recorded: groklm's encode never adds it).
    A file with no end token at all gets `<|endoftext|>` after its last id, so that documents
    can still be separated (a standalone vocabulary; a model's files always name theirs).
    """
    model = data.get("model") or {}
    if model.get("type", "BPE") != "BPE" or "merges" not in model or not isinstance(model.get("vocab"), dict):
        raise TokenizerError(f"{source}: not a BPE model (model.type={model.get('type')!r}); groklm reads BPE vocabularies")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise TokenizerError(f"{source}: BPE {key} is not supported")
    if model.get("dropout"):
        raise TokenizerError(f"{source}: BPE dropout is not supported (it makes encoding random)")
    if model.get("ignore_merges"):
        raise TokenizerError(f"{source}: ignore_merges=true is not supported")
    specials: dict[str, int] = {}
    for added in data.get("added_tokens") or []:
        specials[added["content"]] = added["id"]
    before = _post_processor_prefix(data.get("post_processor"))

    vocab: dict[str, int] = model["vocab"]
    eos = eos_token or next((name for name in KNOWN_EOS if name in specials), None)
    if eos is None:
        specials[ENDOFTEXT] = max([*vocab.values(), *specials.values()], default=-1) + 1
        eos = ENDOFTEXT
    bos = bos_token or (before[0] if before else None)
    for name in (eos, bos):
        if name is not None and name not in specials:
            if name not in vocab:
                raise TokenizerError(f"{source}: {name!r} is named as the end or start token but is not in the vocabulary")
            specials[name] = vocab[name]

    if _is_metaspace(data):
        tokenizer: BaseTokenizer = _hf_metaspace(data, model, specials, source)
    else:
        tokenizer = _hf_byte_level(data, model, specials, source)
    return tokenizer.with_conventions(Conventions(eos_token=eos, bos_token=bos))


def from_hf_dir(path: str | Path) -> BaseTokenizer:
    """The tokenizer of a HF model directory (or of its tokenizer.json), with the conventions that
    the directory records: tokenizer_config.json (bos/eos tokens, chat template),
    chat_template.jinja or chat_template.json (where newer transformers saves the template), and
    generation_config.json (the ids that end a reply: stop tokens besides eos)."""
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    config = _read_json(directory / "tokenizer_config.json")
    generation = _read_json(directory / "generation_config.json")
    eos_ids = generation.get("eos_token_id")
    eos_ids = [eos_ids] if isinstance(eos_ids, int) else [i for i in eos_ids or [] if isinstance(i, int)]
    file = directory / "tokenizer.json" if path.is_dir() else path
    data = _read_json(file)
    if not data:
        raise TokenizerError(f"{file} not found" if not file.is_file() else f"{file} is not a tokenizer.json")
    eos = _token_text(config.get("eos_token"))
    if eos is None and eos_ids:  # no eos in the config: generation_config's first
        added = {t.get("id"): t.get("content") for t in data.get("added_tokens") or []}
        eos = added.get(eos_ids[0])
    tokenizer = from_hf_dict(data, str(file), eos_token=eos, bos_token=_token_text(config.get("bos_token")))
    names = {i: t for t, i in tokenizer.special_tokens.items()}
    stops = tuple(dict.fromkeys(names[i] for i in eos_ids if i in names and names[i] != tokenizer.conventions.eos_token))
    template = _chat_template(directory, config)
    return tokenizer.with_conventions(dataclasses.replace(tokenizer.conventions, chat_template=template, stop_tokens=stops))


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise TokenizerError(f"{path} is corrupt: expected a JSON object")
    return data


def _token_text(value) -> str | None:
    """A token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _chat_template(directory: Path, config: dict) -> str | None:
    """The model's chat template: chat_template.jinja, chat_template.json, or tokenizer_config.json
    (a string, or a list of named templates of which "default" is the chat one)."""
    if (directory / "chat_template.jinja").is_file():
        try:
            return (directory / "chat_template.jinja").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise TokenizerError(f"cannot read {directory / 'chat_template.jinja'}: {e}") from None
    template = _read_json(directory / "chat_template.json").get("chat_template", config.get("chat_template"))
    source = directory / ("chat_template.json" if (directory / "chat_template.json").is_file() else "tokenizer_config.json")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        if "default" not in named:
            raise TokenizerError(f"{source} has chat templates {sorted(map(str, named))} but none named 'default'")
        template = named["default"]
    if template is not None and not isinstance(template, str):
        raise TokenizerError(f"{source}: the chat template must be a string or a list of named templates")
    return template


def _post_processor_prefix(post) -> list[str]:
    """The special tokens a post-processor puts before the text (e.g. Llama's `<s>`).

    groklm's encode adds none (the chat template or the caller writes them), so this is only
    recorded; tokens it appends after the text are dropped the same way."""
    if not isinstance(post, dict):
        return []
    kind = post.get("type")
    if kind == "Sequence":
        return [t for step in post.get("processors") or [] for t in _post_processor_prefix(step)]
    if kind == "TemplateProcessing":
        tokens = []
        for item in post.get("single") or []:
            if "Sequence" in item:
                break
            tokens.append(item.get("SpecialToken", {}).get("id"))
        return [t for t in tokens if t]
    if kind in ("BertProcessing", "RobertaProcessing"):
        return [post["cls"][0]] if post.get("cls") else []
    return []  # ByteLevel (offsets only) and anything else that adds nothing before the text


def _hf_pattern(pre, source: str) -> str:
    """The pre-split regex of a supported HF pre-tokenizer configuration."""
    def byte_level(step, regex_expected: bool) -> None:
        if step.get("add_prefix_space"):
            raise TokenizerError(f"{source}: ByteLevel add_prefix_space=true is not supported (it changes the text)")
        if bool(step.get("use_regex", True)) != regex_expected:
            raise TokenizerError(f"{source}: unsupported ByteLevel use_regex setting")

    if isinstance(pre, dict) and pre.get("type") == "ByteLevel":
        byte_level(pre, True)
        return GPT2_PATTERN
    steps = pre.get("pretokenizers") if isinstance(pre, dict) and pre.get("type") == "Sequence" else None
    if steps and len(steps) == 1 and steps[0].get("type") == "ByteLevel":
        byte_level(steps[0], True)
        return GPT2_PATTERN
    if (
        steps
        and len(steps) == 2
        and steps[0].get("type") == "Digits"
        and steps[0].get("individual_digits")
        and steps[1].get("type") == "ByteLevel"
    ):
        byte_level(steps[1], True)  # SmolLM's: each digit alone, then GPT-2's regex (see SMOLLM_PATTERN)
        return SMOLLM_PATTERN
    if (
        steps
        and len(steps) == 2
        and steps[0].get("type") == "Split"
        and steps[0].get("behavior") == "Isolated"
        and not steps[0].get("invert")
        and "Regex" in (steps[0].get("pattern") or {})
        and steps[1].get("type") == "ByteLevel"
    ):
        byte_level(steps[1], False)
        pattern = steps[0]["pattern"]["Regex"]
        if re.search(r"\{\d+(?:,\d*)?\}\+", pattern):
            raise TokenizerError(
                f"{source}: the Split regex uses `{{n,m}}+`, a possessive repeat to Python and tiktoken but a "
                "repeated group to HF's Oniguruma engine, so groklm could not split text as HF does"
            )
        return pattern
    raise TokenizerError(
        f"{source}: unsupported pre-tokenizer {json.dumps(pre)[:200]}; groklm reads byte-level BPEs "
        "(ByteLevel, Digits(individual) + ByteLevel, or Split(regex, Isolated) + ByteLevel(use_regex=false)) "
        "and SentencePiece-style ones (Metaspace)"
    )


def _hf_byte_level(data: dict, model: dict, specials: dict[str, int], source: str) -> Tokenizer:
    if data.get("normalizer"):
        raise TokenizerError(f"{source}: normalizers are not supported over a byte-level BPE (this one is "
                             f"{data['normalizer'].get('type')}); groklm reads a normalizer only in the SentencePiece "
                             "style: Sequence[Prepend('▁'), Replace(' ', '▁')]")
    pattern = _hf_pattern(data.get("pre_tokenizer"), source)
    vocab: dict[str, int] = model["vocab"]
    alphabet = byte_alphabet()
    byte_ids = [vocab.get(char) for char in alphabet]
    if model.get("byte_fallback") and None in byte_ids:
        raise TokenizerError(f"{source}: byte_fallback over a byte-level vocabulary that lacks byte tokens is not supported")
    unk = model.get("unk_token")
    unk_id = None if unk is None else vocab.get(unk, specials.get(unk))
    if unk is not None and unk_id is None:
        raise TokenizerError(f"{source}: the unknown token {unk!r} is not in the vocabulary")
    merges = _hf_merges(model["merges"], vocab, source)
    return _byte_level_tokenizer(vocab, merges, specials, pattern, unk_id, bool(model.get("fuse_unk")), source)


def _hf_merges(merges, vocab: dict[str, int], source: str) -> list[tuple[str, str]]:
    pairs = []
    for number, merge in enumerate(merges):
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        if left not in vocab or right not in vocab or left + right not in vocab:
            raise TokenizerError(f"{source}: merge {number} ({left!r}, {right!r}) names a token missing from the vocabulary")
        pairs.append((left, right))
    return pairs


def _byte_level_tokenizer(
    vocab: dict[str, int], merges: list[tuple[str, str]], specials: dict[str, int], pattern: str,
    unk_id: int | None, fuse_unk: bool, source: str,
) -> Tokenizer:
    """A byte-level BPE from tokens spelled in GPT-2's byte alphabet. Bytes without a token are
    dropped (or become `unk_id`), as the `tokenizers` library does."""
    to_byte = {char: b for b, char in enumerate(byte_alphabet())}

    def token_to_bytes(token: str) -> bytes:
        try:
            return bytes(to_byte[c] for c in token)
        except KeyError:
            raise TokenizerError(f"{source}: token {token!r} is not written in the byte-level alphabet") from None

    byte_ids = [vocab.get(char) for char in byte_alphabet()]
    special_ids = set(specials.values())
    triples = [(vocab[left], vocab[right], vocab[left + right]) for left, right in merges]
    made = {i for i in byte_ids if i is not None} | {m[2] for m in triples} | special_ids
    extra = {i: token_to_bytes(t) for t, i in vocab.items() if i not in made}
    extra = {i: b for i, b in extra.items() if len(b) >= 2}
    return Tokenizer(triples, pattern=pattern, special_tokens=specials, byte_ids=byte_ids, extra_tokens=extra,
                     unk_id=unk_id, fuse_unk=fuse_unk, source=source)


def _is_metaspace(data: dict) -> bool:
    """Is this a SentencePiece-style vocabulary ("▁" for spaces) rather than a byte-level one?"""
    text = json.dumps([data.get("normalizer"), data.get("pre_tokenizer")], ensure_ascii=False)  # "▁" as itself
    return "Metaspace" in text or SPACE in text or (bool(data["model"].get("byte_fallback")) and "ByteLevel" not in text)


def _hf_metaspace(data: dict, model: dict, specials: dict[str, int], source: str) -> MetaspaceTokenizer:
    """Llama 2 / Mistral / TinyLlama: Prepend("▁") + Replace(" ", "▁") normalizer, or Metaspace."""
    normalizer, pre = data.get("normalizer"), data.get("pre_tokenizer")
    steps = normalizer.get("normalizers") if isinstance(normalizer, dict) and normalizer.get("type") == "Sequence" else [normalizer]
    steps = [s for s in steps if s]
    replace = {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}
    if pre is None and len(steps) == 2 and steps[0] == {"type": "Prepend", "prepend": SPACE} and steps[1] == replace:
        prefix, split = "normalizer", False
    elif pre is None and steps == [replace]:
        prefix, split = "never", False
    elif not steps and isinstance(pre, dict) and pre.get("type") == "Metaspace" and pre.get("replacement", SPACE) == SPACE:
        scheme = pre.get("prepend_scheme")
        if scheme is None:  # files written before prepend_scheme existed
            scheme = "always" if pre.get("add_prefix_space", True) else "never"
        if scheme not in ("first", "always", "never"):
            raise TokenizerError(f"{source}: unknown Metaspace prepend_scheme {scheme!r}")
        prefix, split = scheme, bool(pre.get("split", True))
    else:
        raise TokenizerError(
            f"{source}: unsupported SentencePiece-style setup (normalizer {json.dumps(normalizer)[:150]}, "
            f"pre-tokenizer {json.dumps(pre)[:150]}); groklm reads Prepend('▁') + Replace(' ', '▁') or Metaspace"
        )
    decoder = json.dumps(data.get("decoder"))
    if '"Metaspace"' in decoder:
        strip = '"never"' not in decoder and '"add_prefix_space": false' not in decoder
    else:
        strip = '"Strip"' in decoder and '"start": 0' not in decoder
    vocab = model["vocab"]
    return MetaspaceTokenizer(
        vocab, _hf_merges(model["merges"], vocab, source), special_tokens=specials, prefix=prefix, split=split,
        byte_fallback=bool(model.get("byte_fallback")), unk_token=model.get("unk_token"),
        fuse_unk=bool(model.get("fuse_unk")), strip_prefix=strip, source=source,
    )


# --- GGUF vocabularies ----------------------------------------------------------------------------

# `tokenizer.ggml.pre` -> the regex that splits text before a byte-level BPE (llama.cpp's names).
LLAMA3_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
GGUF_PRE_PATTERNS = {
    "default": GPT2_PATTERN,
    "gpt2": GPT2_PATTERN,
    "gpt-2": GPT2_PATTERN,
    "smollm": SMOLLM_PATTERN,
    "llama-bpe": LLAMA3_PATTERN,
    "llama3": LLAMA3_PATTERN,
    "llama-v3": LLAMA3_PATTERN,
    "smaug-bpe": LLAMA3_PATTERN,
    "qwen2": QWEN2_PATTERN,
    "deepseek-r1-qwen": QWEN2_PATTERN,
}
# llama.cpp's token types (tokenizer.ggml.token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def from_gguf_vocab(
    *,
    model: str,
    tokens: list[str],
    token_types: list[int],
    merges: list[str] | None,
    scores: list[float] | None,
    pre: str | None,
    bos_id: int | None,
    eos_id: int | None,
    unk_id: int | None,
    eot_ids: Sequence[int] = (),
    add_space_prefix: bool | None = None,
    source: str,
) -> BaseTokenizer:
    """The tokenizer that a GGUF file's `tokenizer.ggml.*` metadata describes.

    model "gpt2": byte-level BPE (tokens spelled in GPT-2's byte alphabet, merges "a b"),
        text split by the regex that `pre` names (`GGUF_PRE_PATTERNS`).
    model "llama": SentencePiece BPE with byte fallback; without merges in the file they are
        derived from the scores (`merges_from_scores`), as transformers does.
    Control tokens (type 3) and user-defined ones (type 4) become special tokens at their ids,
    as do the bos/eos/eot tokens. Conventions: eos = the eos token, bos = the bos token, stop
    tokens = the eot/eom tokens other than eos.
    """
    if len(token_types) != len(tokens):
        raise TokenizerError(f"{source}: {len(tokens)} tokens but {len(token_types)} token types")
    if model == "gpt2":
        tokenizer = _gguf_byte_level(tokens, token_types, merges, pre, [bos_id, eos_id, *eot_ids], source)
    elif model == "llama":
        tokenizer = _gguf_sentencepiece(tokens, token_types, merges, scores, [bos_id, eos_id, unk_id, *eot_ids],
                                        add_space_prefix, source)
    else:
        raise TokenizerError(f"{source}: tokenizer model {model!r} is not supported; groklm reads 'gpt2' (byte-level BPE) "
                             "and 'llama' (SentencePiece BPE) vocabularies")

    def name(token_id: int | None, role: str) -> str | None:
        if token_id is None:
            return None
        if not 0 <= token_id < len(tokens):
            raise TokenizerError(f"{source}: the {role} token id {token_id} is outside the vocabulary of {len(tokens)}")
        return tokens[token_id]

    eos = name(eos_id, "eos")
    if eos is None:
        if ENDOFTEXT not in tokenizer.special_tokens:
            raise TokenizerError(f"{source}: the file names no eos token (tokenizer.ggml.eos_token_id), so groklm cannot "
                                 "tell where a text ends")
        eos = ENDOFTEXT
    stops = tuple(dict.fromkeys(t for t in (name(i, "eot") for i in eot_ids) if t != eos))
    return tokenizer.with_conventions(Conventions(eos_token=eos, bos_token=name(bos_id, "bos"), stop_tokens=stops))


def _gguf_specials(tokens: list[str], token_types: list[int], vocab: dict[str, int], role_ids, spelled=None) -> dict[str, int]:
    """Control and user-defined tokens (and the tokens named by role), as special tokens."""
    specials = {}
    for i, (token, kind) in enumerate(zip(tokens, token_types)):
        if kind == CONTROL and (spelled is None or set(token) <= spelled):
            specials[token] = i
        elif kind == USER_DEFINED and vocab.get(token) == i:
            specials[token] = i
    for i in role_ids:
        if i is not None and 0 <= i < len(tokens) and tokens[i] not in specials:
            specials[tokens[i]] = i
    return specials


def _gguf_byte_level(tokens, token_types, merges, pre, role_ids, source) -> Tokenizer:
    if pre is None:
        pre = "default"
    if pre not in GGUF_PRE_PATTERNS:
        raise TokenizerError(f"{source}: unknown pre-tokenizer {pre!r} (tokenizer.ggml.pre); groklm knows "
                             f"{', '.join(sorted(GGUF_PRE_PATTERNS))}")
    if merges is None:
        raise TokenizerError(f"{source}: a 'gpt2' vocabulary without merges (tokenizer.ggml.merges)")
    alphabet = byte_alphabet()
    letters = set(alphabet)
    # A token with a character outside the byte alphabet is respelled from its UTF-8 bytes (as
    # transformers does); a later duplicate spelling wins, as in a dict built from the list.
    vocab = {t if set(t) <= letters else "".join(alphabet[b] for b in t.encode("utf-8")): i for i, t in enumerate(tokens)}
    specials = _gguf_specials(tokens, token_types, vocab, role_ids, letters)
    pairs = _hf_merges(merges, vocab, source)
    # Missing bytes are dropped: transformers' GGUF tokenizer has no unknown token.
    return _byte_level_tokenizer(vocab, pairs, specials, GGUF_PRE_PATTERNS[pre], None, False, source)


def merges_from_scores(tokens: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """BPE merges implied by a SentencePiece vocabulary: every way to cut each token into two
    tokens of the vocabulary, best score first (ties: longer left part, then longer right part,
    then the order found; within one token, by the ids of the two parts), which is how
    transformers recovers them."""
    vocab = {t: i for i, t in enumerate(tokens)}
    found = []
    for token, score in dict(zip(tokens, scores)).items():
        cuts = [(token[:k], token[k:]) for k in range(1, len(token)) if token[:k] in vocab and token[k:] in vocab]
        cuts.sort(key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
        found.extend((score, left, right) for left, right in cuts)
    found.sort(key=lambda m: (m[0], len(m[1]), len(m[2])), reverse=True)  # stable: the order found breaks ties
    return [(left, right) for _, left, right in found]


def _gguf_sentencepiece(tokens, token_types, merges, scores, role_ids, add_space_prefix, source) -> MetaspaceTokenizer:
    vocab = {t: i for i, t in enumerate(tokens)}
    if merges is not None:
        pairs = _hf_merges(merges, vocab, source)
    elif scores is not None:
        if len(scores) != len(tokens):
            raise TokenizerError(f"{source}: {len(tokens)} tokens but {len(scores)} scores")
        pairs = merges_from_scores(tokens, [float(s) for s in scores])
    else:
        raise TokenizerError(f"{source}: a 'llama' vocabulary with neither merges nor scores")
    specials = _gguf_specials(tokens, token_types, vocab, role_ids)
    specials = {t: i for t, i in specials.items() if vocab.get(t) == i}  # a duplicate spelling: the later id wins
    prefix = "never" if add_space_prefix is False else "first"
    # transformers' LlamaTokenizer: Metaspace(prepend_scheme="first", split=False), byte fallback,
    # no unknown token in the model (a character with no byte tokens is dropped).
    return MetaspaceTokenizer(vocab, pairs, special_tokens=specials, prefix=prefix, split=False, byte_fallback=True,
                              unk_token=None, fuse_unk=True, source=source)
