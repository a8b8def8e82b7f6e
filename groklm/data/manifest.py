"""Provenance: where every source of a corpus came from, under what licence, and what cleaning
did to it.

`groklm data prepare` writes DATA/manifest.json (with or without cleaning), `groklm data clean`
writes OUT/manifest.json, and pretraining copies the data's manifest into RUN/data_manifest.json,
so a model carries the account of what it was trained on:

    {"cleaning": null, or {"rules", "near_dup_threshold", "shingle_words", "num_perm", "split_paragraphs"},
     "sources": [{"source":   the SOURCE as typed,
                  "origin":   an absolute path, or the URL a named corpus is downloaded from,
                  "license":  from --license, a named corpus's own, or "unknown",
                  "sha256":   the file's sha256; for several files, the sha256 of their `sha256sum`
                              listing ("<sha256>  <path>\\n" per file, paths relative to the folder),
                  "bytes", "files": [{"path", "sha256", "bytes"}, ...],
                  "documents_in", "documents_out", "bytes_in", "bytes_out",
                  "removed": {rule: {"documents", "bytes"}, "boilerplate" also "lines"}}, ...],
     "totals": the same counts over every source}

A source whose licence is unknown is recorded as "unknown" and named in a warning.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sysconfig
import warnings
from pathlib import Path

from groklm.data.sources import SHAKESPEARE_URL, Source, sha256_of
from groklm.errors import ConfigError
from groklm.rundir import atomic_path, write_json

MANIFEST_FILE = "manifest.json"
RUN_MANIFEST_FILE = "data_manifest.json"
UNKNOWN = "unknown"
# The named corpora's licences are known: the Python standard library is under the PSF
# License; Tiny Shakespeare is Shakespeare's plays, long in the public domain.
NAMED_LICENSES = {"pystdlib": "PSF-2.0", "shakespeare": "public-domain"}


def parse_licenses(values: list[str], specs: list[str]) -> dict[str, str]:
    """{SOURCE: licence} from --license flags. `SOURCE=LICENCE` names one source's licence; a bare
    `LICENCE` is that of every source not named, except a named corpus, whose licence is known.
    A source with none of these is "unknown"."""
    default, named = None, {}
    for value in values:
        spec, sep, licence = value.rpartition("=")
        if not (licence if sep else value).strip():
            raise ConfigError(f"--license {value} gives no licence")
        if not sep:
            if default is not None:
                raise ConfigError(f"two licences for every source (--license {default} and --license {value}): "
                                  "give one, and SOURCE=LICENCE for the exceptions")
            default = value.strip()
        elif spec not in specs:
            raise ConfigError(f"--license {value} names {spec!r}, which is not one of the SOURCEs ({', '.join(specs)})")
        else:
            named[spec] = licence.strip()
    return {spec: named.get(spec) or NAMED_LICENSES.get(spec) or default or UNKNOWN for spec in specs}


def describe_source(source: Source, licence: str) -> dict:
    """A source's origin, licence and the sha256 of its bytes (reads every file once)."""
    if source.spec == "shakespeare":
        origin, root = SHAKESPEARE_URL, source.files[0].parent
    elif source.spec == "pystdlib":
        origin = root = Path(sysconfig.get_paths()["stdlib"])
    else:
        path = Path(source.spec).resolve()
        origin, root = path, path if path.is_dir() else path.parent
    files = [{"path": f.resolve().relative_to(Path(root).resolve()).as_posix(), "sha256": sha256_of(f),
              "bytes": f.stat().st_size} for f in source.files]
    if len(files) == 1:
        digest = files[0]["sha256"]
    else:
        digest = hashlib.sha256("".join(f"{f['sha256']}  {f['path']}\n" for f in files).encode()).hexdigest()
    return {"source": source.spec, "origin": str(origin), "license": licence, "sha256": digest,
            "bytes": sum(f["bytes"] for f in files), "files": files}


def describe_sources(sources: list[Source], licenses: dict[str, str]) -> list[dict]:
    """Every source described; a warning names those whose licence is unknown."""
    entries = [describe_source(source, licenses.get(source.spec, UNKNOWN)) for source in sources]
    unknown = [entry["source"] for entry in entries if entry["license"] == UNKNOWN]
    if unknown:
        warnings.warn(f"licence unknown for {', '.join(unknown)}: recorded as \"unknown\" in the manifest; "
                      "give it with --license SOURCE=LICENCE (or one --license LICENCE for all)", stacklevel=2)
    return entries


def build_manifest(entries: list[dict], tallies: dict[str, dict], totals: dict, cleaning: dict | None) -> dict:
    """The manifest: each source's description joined with its tally (the cleaner's counts)."""
    empty = {"documents_in": 0, "documents_out": 0, "bytes_in": 0, "bytes_out": 0, "removed": {}}
    sources = [{**entry, **tallies.get(entry["source"], empty)} for entry in entries]
    return {"cleaning": cleaning, "sources": sources, "totals": totals}


def write_manifest(directory: str | os.PathLike, manifest: dict) -> Path:
    path = Path(directory) / MANIFEST_FILE
    write_json(path, manifest)
    return path


def copy_manifest(data_dir: str | os.PathLike, run_dir: str | os.PathLike) -> None:
    """DATA/manifest.json -> RUN/data_manifest.json, when the data has one (data prepared
    before manifests existed has none)."""
    source = Path(data_dir) / MANIFEST_FILE
    if source.is_file():
        with atomic_path(Path(run_dir) / RUN_MANIFEST_FILE) as tmp:
            shutil.copyfile(source, tmp)
