"""The run directory: the one contract every stage reads and writes.

    RUN/
      config.json          what the run is (the schema below)
      model.safetensors    the weights (safetensors: no pickle, safe to load from anyone)
      tokenizer/           the tokenizer files
      metrics.jsonl        one JSON object per log step
      checkpoint/          optimizer + RNG + data position, for exact resume
      *.png, report.md     plots and a human summary

config.json has one schema for every stage:

    {"stage":  "pretrain" | "sft" | "reward" | "dpo" | "kto" | "ppo" | "grpo" | "seq2seq" | "distill" | "import",
     "parent": the run directory this run started from (absolute), or null,
     "arch":   "gpt" | "rnn" | "lstm" | "gru" | "mamba" | "rwkv" | "jamba" | "reward" | "seq2seq" | "encoder-classifier",
     "model":  the model config (its shape),
     "train":  the TrainConfig (absent for an import),
     "data":   what it was trained on (files, synthetic specs, counts),
     "<stage>": settings of that stage alone, when it has any ("pretrain": {"preset"}, "reward":
                {"margin"}, "dpo": {"beta", ...}, "kto": {"beta", "desirable_weight", "undesirable_weight"},
                "rl": the RLConfig, "distill": {"teacher", ...},
                "import": {"format", "path", "source", "architecture", "quantization", "dtype", ...})}

Runs written before this schema still load: `read_config` renames their keys (`base_run` and
a path `source` become `parent`; an import's `source` becomes its "import" section; top-level
stage settings move into their sections), so every reader sees the schema above.

Every write here is atomic: write a temporary file in the same directory, fsync, then
`os.replace` it over the target. A crash mid-write leaves the previous good file intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from groklm.errors import CheckpointError, ConfigError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoint"

STAGES = ("pretrain", "sft", "reward", "dpo", "kto", "ppo", "grpo", "seq2seq", "distill", "import", "merge")
# Settings that runs written before the one schema kept at the top level: {key: its section}.
OLD_SECTION_KEYS = {
    "preset": "pretrain",
    "student": "distill", "labels": "distill", "max_length": "distill", "teacher": "distill", "instructions": "distill",
}
OLD_DATA_KEYS = ("task", "reward", "prompts")  # seq2seq's task, RL's reward and prompts: now under "data"


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success it replaces `target` atomically."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by groklm, with a clear error if it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is corrupt (not valid JSON: {error})") from error


def read_config(run_dir: str | os.PathLike) -> dict:
    """The run's config.json, checked to be a run directory."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        raise CheckpointError(f"{run_dir} is a file, not a run directory: give the folder a training command wrote "
                              f"(a .gguf file or a Hugging Face checkpoint becomes one with `groklm import {run_dir} --out RUN`)")
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    config = read_json(run_dir / CONFIG_FILE)
    if not isinstance(config, dict) or "model" not in config:
        raise CheckpointError(f"{run_dir / CONFIG_FILE} has no 'model' section: not a groklm run")
    return normalise_config(config)


def normalise_config(config: dict) -> dict:
    """A config.json of any age in the one schema (see the top of this module)."""
    config = dict(config)
    if "base_run" in config:  # SFT, reward and DPO runs
        config.setdefault("parent", config.pop("base_run"))
    source = config.pop("source", None)
    if isinstance(source, dict):  # an import: where the weights came from
        config.setdefault("import", source)
    elif source is not None:  # an RL run: the run it started from
        config.setdefault("parent", source)
    config.setdefault("parent", None)
    config.setdefault("arch", "gpt")
    for key, section in OLD_SECTION_KEYS.items():
        if key in config:
            config[section] = {**config.get(section, {}), key: config.pop(key)}
    for key in OLD_DATA_KEYS:
        # (a reward run's own "reward" section, {"margin": ...}, is its settings: it stays)
        if key in config and not (key == "reward" and isinstance(config[key], dict)):
            config["data"] = {**config.get("data", {}), key: config.pop(key)}
    return config


class RunDir:
    """A run directory: its files' paths, and the rules for starting, resuming and describing one."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / TOKENIZER_DIR

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    def holds_run(self) -> bool:
        """A config or a checkpoint: something a fresh run would overwrite."""
        return self.config_path.exists() or (self.path / CHECKPOINT_DIR).exists()

    def check_fresh(self, remedy: str = "pass --resume to continue it, or choose another --out") -> None:
        """Refuse to start a new run where one already is: its weights and checkpoint would be lost."""
        if self.holds_run():
            raise ConfigError(f"{self.path} already holds a run; {remedy}")

    def read_config(self) -> dict:
        return read_config(self.path)

    def write_config(self, stage: str, *, parent: str | os.PathLike | None, arch: str, model: dict,
                     train: dict | None, data: dict | None, **sections: dict) -> dict:
        """Write config.json in the one schema; returns what was written. `sections` are the
        stage's own settings ({"dpo": {"beta": ...}})."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        config = {"stage": stage, "parent": str(Path(parent).resolve()) if parent is not None else None,
                  "arch": arch, "model": model}
        if train is not None:
            config["train"] = train
        config["data"] = data or {}
        config.update(sections)
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.config_path, config)
        return config

    def copy_tokenizer(self, source: str | os.PathLike) -> None:
        """Copy a tokenizer into RUN/tokenizer/: a tokenizer folder, or the one file that is a
        whole tokenizer (a Hugging Face tokenizer.json)."""
        source = Path(source)
        if source.is_dir():
            shutil.copytree(source, self.tokenizer_dir, dirs_exist_ok=True)
        else:
            self.tokenizer_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, self.tokenizer_dir / source.name)
