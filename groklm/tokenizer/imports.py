"""Reading vocabularies made elsewhere, offline: tiktoken rank files and HF `tokenizer.json`.

Both become a `Tokenizer` with the original ids, so encoding matches the original library.

- tiktoken `.tiktoken`: one `base64(token bytes) rank` per line. The rank is both the id and
  the merge priority; the merges themselves are not stored, so we recover each one: a token's
  merge is the pair that BPE with only lower ranks leaves when run on the token's bytes.
- HF `tokenizer.json` with a `BPE` model and a `ByteLevel` pre-tokenizer (GPT-2 style): tokens
  are written in GPT-2's byte alphabet (each byte shown as a printable character, e.g. space
  as "Ġ"), merges are pairs of such strings in priority order, and ids are arbitrary (the
  byte alphabet is not numbered in byte order), so priority and ids are kept apart.
"""

from __future__ import annotations

import base64
import json
import re
import warnings
from pathlib import Path

from groklm.errors import TokenizerError
from groklm.tokenizer.base import DEFAULT_SPECIAL_TOKENS
from groklm.tokenizer.bpe import GPT2_PATTERN, Tokenizer


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


# --- Hugging Face tokenizers -------------------------------------------------------------------


def from_hf_file(path: str | Path) -> Tokenizer:
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise TokenizerError(f"cannot read {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path} is not valid JSON ({e})") from None
    return from_hf_dict(data, str(path))


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
        "(ByteLevel, or Split(regex, Isolated) + ByteLevel(use_regex=false))"
    )


def from_hf_dict(data: dict, source: str = "tokenizer.json") -> Tokenizer:
    """A `Tokenizer` that encodes like the HF `tokenizers` library does with this file."""
    model = data.get("model") or {}
    if model.get("type", "BPE") != "BPE" or "merges" not in model or "vocab" not in model:
        raise TokenizerError(f"{source}: not a BPE model (model.type={model.get('type')!r})")
    if data.get("normalizer"):
        raise TokenizerError(f"{source}: normalizers are not supported (this one is {data['normalizer'].get('type')})")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise TokenizerError(f"{source}: BPE {key} is not supported (not a byte-level BPE)")
    if model.get("byte_fallback") or model.get("dropout"):
        raise TokenizerError(f"{source}: byte_fallback and dropout are not supported")
    if model.get("ignore_merges"):
        raise TokenizerError(f"{source}: ignore_merges=true is not supported")
    post = data.get("post_processor")
    if post and post.get("type") not in ("ByteLevel",):
        warnings.warn(f"{source}: the {post.get('type')} post-processor is ignored (groklm adds no tokens around text)", stacklevel=2)
    pattern = _hf_pattern(data.get("pre_tokenizer"), source)

    to_byte = {char: b for b, char in enumerate(byte_alphabet())}

    def token_to_bytes(token: str) -> bytes:
        try:
            return bytes(to_byte[c] for c in token)
        except KeyError:
            raise TokenizerError(f"{source}: token {token!r} is not written in the byte-level alphabet") from None

    vocab: dict[str, int] = model["vocab"]
    specials = {t["content"]: t["id"] for t in data.get("added_tokens") or []}
    try:
        byte_ids = [vocab[char] for char in byte_alphabet()]
    except KeyError as e:
        raise TokenizerError(f"{source}: the vocabulary lacks the byte token {e.args[0]!r}; not a full byte-level BPE") from None

    merges = []
    for number, merge in enumerate(model["merges"]):
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        try:
            merges.append((vocab[left], vocab[right], vocab[left + right]))
        except KeyError as e:
            raise TokenizerError(f"{source}: merge {number} ({left!r}, {right!r}) names a token missing from the vocabulary: {e}") from None
    made = set(byte_ids) | {m[2] for m in merges} | set(specials.values())
    extra = {i: token_to_bytes(t) for t, i in vocab.items() if i not in made and t not in specials}
    extra = {i: b for i, b in extra.items() if len(b) >= 2}
    for name in DEFAULT_SPECIAL_TOKENS:
        if name not in specials:
            specials[name] = max([*vocab.values(), *specials.values()]) + 1
    return Tokenizer(merges, pattern=pattern, special_tokens=specials, byte_ids=byte_ids, extra_tokens=extra, source=source)
