"""Data: text sources (files, directories, named corpora) turned into token shards for training,
chat and preference records, and preference pairs sampled from a run.

    from groklm.data.prepare import prepare
    from groklm.data import TokenShards
    prepare(["shakespeare"], "char", "data/shakespeare")
    shards = TokenShards("data/shakespeare")

`prepare` (with data cleaning) is not imported here: training reads shards and needs none of it.
"""

from __future__ import annotations

from groklm.data.shards import TokenShards, batch_offsets, dtype_for_vocab, get_batch

__all__ = ["TokenShards", "batch_offsets", "dtype_for_vocab", "get_batch"]
