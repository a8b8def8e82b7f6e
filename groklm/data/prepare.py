"""`groklm data prepare`: sources -> documents -> (cleaning) -> token ids -> shards + manifest.

The shards' format and their readers are in shards.py; the documents and the cleaning rules in
clean.py; the provenance manifest in manifest.py. This module is the pipeline joining them, kept
apart from shards.py so that training, which only reads shards, never imports the cleaner (and
its MinHash library).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from groklm.data.clean import REMOVED_DIR, CleanConfig, Cleaner, read_documents
from groklm.data.manifest import MANIFEST_FILE, describe_sources, parse_licenses, write_manifest
from groklm.data.shards import META_FILE, ShardWriter, dtype_for_vocab
from groklm.data.sources import resolve
from groklm.errors import ConfigError, DataError, TokenizerError
from groklm.rundir import TOKENIZER_DIR, write_json
from groklm.tokenizer import CharTokenizer, load_tokenizer

ENCODE_BATCH = 64  # documents per encode_batch call: enough to keep a fast encoder busy


def prepare(
    sources: list[str],
    tokenizer: str,
    out_dir: str | os.PathLike,
    val_fraction: float = 0.1,
    shakespeare_path: str | os.PathLike | None = None,
    progress: bool = True,
    cleaning: CleanConfig | None = None,
    licenses: list[str] | tuple[str, ...] = (),
    split_paragraphs: bool = False,
) -> dict:
    """Encode SOURCEs into DATA/{train,val}.bin + meta.json + tokenizer/ + manifest.json; returns the meta.

    `tokenizer` is a tokenizer directory (or file), or "char" to fit a character tokenizer to the text.
    Documents are separated by the end-of-text token, so the model learns where texts end and
    never mistakes the start of one file for the continuation of another. Validation is the
    last `val_fraction` of the token stream: held out from training, and (for a single
    document) later text than anything trained on.

    Documents are read as data/clean.py says (a .jsonl file: one per record's "text"; with
    `split_paragraphs`, one per paragraph) and, with `cleaning`, pass its rules first (removed
    samples go to DATA/removed/). manifest.json records every source's origin, sha256 and
    licence (`licenses`: --license values, see data/manifest.py) and what cleaning removed.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if not sources:
        raise DataError("no SOURCE given: name files, directories, `pystdlib` or `shakespeare`")
    resolved = [resolve(spec, shakespeare_path) for spec in sources]
    licence_of = parse_licenses(list(licenses), sources)
    tok = _tokenizer_for(tokenizer, resolved, split_paragraphs)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).unlink(missing_ok=True)  # a half-written directory must not look prepared
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # nor keep an earlier preparation's account
    shutil.rmtree(out / REMOVED_DIR, ignore_errors=True)
    entries = describe_sources(resolved, licence_of)
    writer = ShardWriter(out, dtype_for_vocab(tok.vocab_size))
    cleaner = Cleaner(cleaning)  # without cleaning it removes nothing and counts for the manifest
    documents = 0
    for batch in _chunks(cleaner.clean(read_documents(resolved, split_paragraphs, progress)), ENCODE_BATCH):
        for ids in tok.encode_batch([document.text for document in batch]):
            if documents:
                writer.write([tok.eot_id])
            writer.write(ids)
            documents += 1
    n_train, n_val = writer.finish(val_fraction)
    if documents == 0:
        read = cleaner.totals().documents_in
        raise DataError(f"cleaning removed all {read} documents of {', '.join(sources)}" if read
                        else f"no text found in {', '.join(sources)} (empty or binary files only)")

    tok.save(out / TOKENIZER_DIR)
    cleaner.write_samples(out)
    write_manifest(out, cleaner.manifest(entries, split_paragraphs))
    meta = {
        "vocab_size": tok.vocab_size,
        "dtype": writer.dtype.name,
        "train_tokens": n_train,
        "val_tokens": n_val,
        "documents": documents,
        "val_fraction": val_fraction,
        "tokenizer": tok.type,
        "eot_id": tok.eot_id,
        "sources": [source.describe() for source in resolved],
    }
    write_json(out / META_FILE, meta)
    return meta


def _tokenizer_for(spec: str, sources, split_paragraphs: bool = False):
    """Load the tokenizer at `spec`, or fit a character tokenizer when spec is "char" (to
    the documents before cleaning: a few spare characters cost nothing)."""
    if spec == "char":
        return CharTokenizer.train(document.text for document in read_documents(sources, split_paragraphs))
    if not Path(spec).exists():
        raise TokenizerError(
            f"tokenizer {spec} does not exist; train one with `groklm tokenizer train`, or pass --tokenizer char"
        )
    return load_tokenizer(spec)


def _chunks(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
