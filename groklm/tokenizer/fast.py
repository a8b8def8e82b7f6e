"""The fast encoder: tiktoken's Rust BPE, driven by our merges.

tiktoken describes a BPE as `mergeable_ranks`: token bytes -> rank, where a lower rank means
"merged earlier". Its encoder repeatedly merges the adjacent pair whose *concatenated bytes*
have the lowest rank. Our reference encoder merges the adjacent *pair of ids* that comes first
in the merge list. Unique token bytes (our trainer guarantees them; see trainer.py) make the
rank of a token simply the position of its merge in the list, and the two then agree on all
real text the tests have seen (docs/guide.md, "Two encoders, one answer", names the one
contrived case where they could still differ).

Ranks are merge priority; ids are whatever the vocabulary says. For our own tokenizers (and
tiktoken files) ids grow with priority, so the ids *are* valid ranks and tiktoken's output needs
no translation. An imported vocabulary may number its tokens otherwise; then tiktoken runs on
priority ranks 0..n-1 and a numpy lookup table turns ranks back into ids.

A vocabulary that lacks some byte tokens (bpe.py) cannot be handed to tiktoken whole: it would
keep such a byte as a token. Texts that need one are split by the `Tokenizer` itself and each
chunk's remaining bytes come here one piece at a time (`encode_piece`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tiktoken


@dataclass
class FastEncoder:
    encoding: tiktoken.Encoding
    rank_to_id: np.ndarray | None  # None when ranks are the ids

    def encode(self, text: str, allowed_special: set[str]) -> list[int]:
        if self.rank_to_id is None:
            return self.encoding.encode(text, allowed_special=allowed_special, disallowed_special=())
        ranks = self.encoding.encode_to_numpy(text, allowed_special=allowed_special, disallowed_special=())
        return self.rank_to_id[ranks].tolist()

    def encode_piece(self, data: bytes) -> list[int]:
        """BPE of one chunk's bytes, with no regex split (every byte must have a token)."""
        if not data:
            return []
        ranks = self.encoding._encode_single_piece(data)
        return ranks if self.rank_to_id is None else self.rank_to_id[ranks].tolist()

    def encode_batch(self, texts: list[str], allowed_special: set[str]) -> list[list[int]]:
        batch = self.encoding.encode_batch(texts, allowed_special=allowed_special, disallowed_special=())
        if self.rank_to_id is None:
            return batch
        return [self.rank_to_id[np.asarray(ranks, dtype=np.int64)].tolist() for ranks in batch]


def build_fast_encoder(
    name: str,
    pattern: str,
    byte_ids: list[int | None],
    merges: list[tuple[int, int, int]],
    token_bytes: dict[int, bytes],
    extra_ids: list[int],
    special_tokens: dict[str, int],
) -> FastEncoder:
    """Build the tiktoken encoding for a BPE given by its merges (in priority order)."""
    # Ids in priority order: single bytes (their ranks are never compared, only looked up),
    # then each merge's result. A later merge that re-creates existing bytes (possible in an
    # imported vocabulary, never in ours) adds nothing: tiktoken keys tokens by their bytes.
    ranked: list[int] = [i for i in byte_ids if i is not None]
    n_bytes = len(ranked)
    seen = {token_bytes[i] for i in ranked}
    for _, _, new_id in merges:
        if token_bytes[new_id] not in seen:
            seen.add(token_bytes[new_id])
            ranked.append(new_id)
    merged = ranked[n_bytes:]
    ids_are_ranks = all(a < b for a, b in zip(merged, merged[1:])) and not set(special_tokens.values()) & set(ranked)
    extras = [i for i in extra_ids if token_bytes[i] not in seen]
    if ids_are_ranks:
        ranks = {token_bytes[i]: i for i in ranked + extras}
        return FastEncoder(tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=dict(special_tokens)), None)
    ranked += extras
    ranks = {token_bytes[i]: rank for rank, i in enumerate(ranked)}
    special_ranks = {text: len(ranked) + k for k, text in enumerate(special_tokens)}
    rank_to_id = np.array(ranked + list(special_tokens.values()), dtype=np.int64)
    encoding = tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special_ranks)
    return FastEncoder(encoding, rank_to_id)
