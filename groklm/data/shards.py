"""Token shards: a corpus as two flat arrays of token ids on disk, read by memory-mapping.

    DATA/
      train.bin    every training token, back to back (uint16 if the vocab fits, else uint32)
      val.bin      the held-out tail of the same stream
      meta.json    vocab_size, dtype, token counts, sources, tokenizer kind
      tokenizer/   the tokenizer that made the ids

Training never loads a shard: `np.memmap` lets the OS page in just the windows a batch reads,
so a corpus far larger than memory trains the same way as a small one.

A batch is `batch_size` windows of block_size + 1 tokens at random offsets; the input is the
window minus its last token, the target the window minus its first. The offsets are a pure
function of (seed, step), so resuming or splitting a batch over processes needs no saved
sampler state: any process can recompute any step's batch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from groklm.errors import DataError, GroklmError
from groklm.rundir import read_json

META_FILE = "meta.json"
SPLIT_FILES = {"train": "train.bin", "val": "val.bin"}


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """Two bytes a token while ids fit (GPT-2's 50257 does), four beyond."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


class ShardWriter:
    """Append token arrays as they are encoded; `finish` splits the stream into train and val.

    Everything goes into train.bin first; at the end the last `val_fraction` of the tokens is
    copied to val.bin and train.bin is truncated before them. Memory stays one document deep.
    """

    def __init__(self, out_dir: Path, dtype: np.dtype):
        self.out_dir, self.dtype = Path(out_dir), np.dtype(dtype)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / (SPLIT_FILES["train"] + ".partial")
        self.handle = open(self.path, "wb")
        self.count = 0

    def write(self, ids) -> None:
        array = np.asarray(ids, dtype=np.int64)
        if array.size and (array.min() < 0 or array.max() > np.iinfo(self.dtype).max):
            raise DataError(f"token id out of range for {self.dtype} shards")
        self.handle.write(array.astype(self.dtype).tobytes())
        self.count += array.size

    def finish(self, val_fraction: float) -> tuple[int, int]:
        """Split off the tail as val.bin; returns (train tokens, val tokens)."""
        self.handle.close()
        n_val = int(round(self.count * val_fraction))
        n_train = self.count - n_val
        stream = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.count,)) if self.count else np.zeros(0, self.dtype)
        stream[n_train:].tofile(self.out_dir / SPLIT_FILES["val"])
        del stream
        os.truncate(self.path, n_train * self.dtype.itemsize)
        os.replace(self.path, self.out_dir / SPLIT_FILES["train"])
        return n_train, n_val


class TokenShards:
    """A prepared data directory, opened read-only: `.meta`, `.train` and `.val` arrays."""

    def __init__(self, data_dir: str | os.PathLike):
        self.dir = Path(data_dir)
        if not self.dir.is_dir():
            raise DataError(f"data directory {self.dir} does not exist; make it with `groklm data prepare`")
        if not (self.dir / META_FILE).is_file():
            raise DataError(f"{self.dir} has no {META_FILE}: not a prepared data directory (`groklm data prepare`)")
        try:
            self.meta = read_json(self.dir / META_FILE)
            self.dtype = np.dtype(self.meta["dtype"])
            self.vocab_size = int(self.meta["vocab_size"])
        except (KeyError, TypeError, ValueError, GroklmError) as error:
            raise DataError(f"{self.dir / META_FILE} is malformed ({error}); prepare the data again") from error
        self.train = self._open("train")
        self.val = self._open("val")

    def _open(self, split: str) -> np.ndarray:
        path = self.dir / SPLIT_FILES[split]
        expected = int(self.meta.get(f"{split}_tokens", -1))
        size = path.stat().st_size if path.is_file() else -1
        if size != expected * self.dtype.itemsize:
            raise DataError(
                f"{path} should hold {expected} tokens of {self.dtype} but is "
                f"{'missing' if size < 0 else f'{size} bytes'}; prepare the data again"
            )
        if expected == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(path, dtype=self.dtype, mode="r", shape=(expected,))


def batch_offsets(seed: int, step: int, count: int, n_tokens: int, block_size: int, stream: int = 0) -> np.ndarray:
    """`count` window starts for `step`, the same on every process and after every resume.
    `stream` keeps independent draws apart (0: training batches, 1: validation batches)."""
    rng = np.random.default_rng([seed, stream, step])
    return rng.integers(0, n_tokens - block_size, size=count)


def get_batch(tokens: np.ndarray, offsets: np.ndarray, block_size: int):
    """Input and target tensors (len(offsets), block_size), int64, targets shifted by one."""
    windows = torch.from_numpy(tokens[offsets[:, None] + np.arange(block_size + 1)].astype(np.int64))
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
