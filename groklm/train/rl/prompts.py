"""The prompts RL answers: {"prompt": [messages], ...} records (the rest of a record, such as
a synthetic task's answer, is for the reward to read)."""

from __future__ import annotations

from pathlib import Path

from groklm.errors import DataError
from groklm.jsonl import read_jsonl
from groklm.tasks import make_rl_prompts
from groklm.tokenizer.chat import check_messages

SYNTHETIC = "synthetic"


def load_prompts(spec, seed: int = 0) -> list[dict]:
    """`synthetic`, `synthetic:task1,task2`, a .jsonl of {"prompt": [messages], ...}, or a list of records."""
    if isinstance(spec, list):
        records = spec
    elif str(spec).split(":")[0] == SYNTHETIC:
        names = str(spec).partition(":")[2]
        records = make_rl_prompts(names.split(",") if names else None, split="train", seed=seed)
    else:
        path = Path(spec)
        if not path.is_file():
            raise DataError(f"prompts file {path} does not exist (or use --prompts synthetic[:TASKS])")
        records = read_jsonl(path, allow_empty=True)
    if not records:
        raise DataError("no prompts to learn from")
    for n, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(f"prompt record {n} is not an object with a 'prompt' message list")
        check_messages(record.get("prompt"), where=f"prompt record {n}")
    return records
