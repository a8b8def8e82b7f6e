"""Data: text sources (files, directories, named corpora) turned into token shards for training.

`from groklm.data import prepare, TokenShards` works; the import of numpy waits until then, so
`groklm --help` (which imports this package's commands) stays quick.
"""

__all__ = ["TokenShards", "batch_offsets", "dtype_for_vocab", "get_batch", "prepare"]


def __getattr__(name: str):
    if name in __all__:
        from groklm.data import shards

        return getattr(shards, name)
    raise AttributeError(f"module 'groklm.data' has no attribute {name!r}")
