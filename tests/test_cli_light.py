"""The command line stays light: building the parser and `groklm --help` import no torch, numpy
or matplotlib, and `groklm tokenizer ...` no torch (its fast encoder uses numpy), so they answer
at once. Each check runs in a fresh interpreter, since this test process has long imported torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from groklm.cli import apis as apis_cli
from groklm.cli import apps as apps_cli
from groklm.cli import chat as chat_cli
from groklm.cli import experiments as experiments_cli
from groklm.cli import rag as rag_cli
from groklm.cli import train as train_cli
from groklm.cli.main import build_parser
from groklm.tokenizer import Tokenizer

HEAVY = ("torch", "numpy", "matplotlib")


def heavy_imports(*args: str, code: str | None = None) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `python -X importtime` on `-c code` or `-m groklm ARGS`; the heavy packages it imported."""
    command = ["-c", code] if code is not None else ["-m", "groklm", *args]
    done = subprocess.run([sys.executable, "-X", "importtime", *command], capture_output=True, text=True, timeout=120)
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return done, {name for name in imported if name.split(".")[0] in HEAVY}


def test_importing_groklm_imports_no_torch():
    """`groklm.load` imports the model code when it is called, not when groklm is imported."""
    done, heavy = heavy_imports(code="import groklm; assert callable(groklm.load)")
    assert done.returncode == 0 and not heavy


def test_building_the_parser_imports_no_torch():
    done, heavy = heavy_imports(code="from groklm.cli.main import build_parser; build_parser()")
    assert done.returncode == 0, done.stderr[-2000:]
    assert not heavy


def test_help_imports_no_torch():
    done, heavy = heavy_imports("--help")
    assert done.returncode == 0 and "tokenizer" in done.stdout and "speedrun" in done.stdout
    assert not heavy


def test_agent_help_imports_no_torch():
    """The tools that act add flags, not imports: groklm.apps.actions loads when the agent runs."""
    done, heavy = heavy_imports("agent", "--help")
    assert done.returncode == 0 and "--enable TOOL,..." in done.stdout and "--allow-recipient" in done.stdout
    assert not heavy


@pytest.fixture
def tokenizer_dir(tmp_path):
    Tokenizer.train(["the cat sat on the mat. " * 50], 268, progress=False).save(tmp_path / "tok")
    return tmp_path / "tok"


def test_tokenizer_commands_import_no_torch(tokenizer_dir):
    done, heavy = heavy_imports("tokenizer", "encode", "--tokenizer", str(tokenizer_dir), "the cat", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    ids = done.stdout.strip()
    assert ids.startswith("[") and not {name for name in heavy if name.startswith(("torch", "matplotlib"))}
    done, heavy = heavy_imports("tokenizer", "decode", "--tokenizer", str(tokenizer_dir), ids)
    assert done.returncode == 0 and done.stdout == "the cat"
    assert not {name for name in heavy if name.startswith(("torch", "matplotlib"))}


def test_every_command_has_help():
    parser = build_parser()
    [commands] = [action for action in parser._actions if action.dest == "command"]
    assert {"tokenizer", "pretrain", "sft", "reward", "dpo", "ppo", "seq2seq", "eval", "chat", "serve", "sample",
            "attention", "export", "import", "rag", "agent", "evals", "traces", "distill", "speedrun",
            "compare"} <= set(commands.choices)
    for name, subparser in commands.choices.items():
        assert name in subparser.format_help()


def test_choices_written_out_in_the_cli_match_the_library():
    """The CLI names a few library constants without importing their (heavy) modules."""
    from groklm.apps import actions, distill
    from groklm.apps.api_calls import dataset as api_dataset
    from groklm.apps.api_calls import evaluate as api_evaluate
    from groklm.apps.rag.retrieve import MODES
    from groklm.experiments.compare import DEFAULT_MODELS, MODELS
    from groklm.infer.chat import HELP
    from groklm.train.dpo import LOSSES

    assert train_cli.DPO_LOSSES == LOSSES
    assert rag_cli.MODES == MODES
    assert apis_cli.CONDITIONS == api_evaluate.CONDITIONS and set(apis_cli.EVAL_SPLITS) < set(api_dataset.SPLITS)
    assert chat_cli.CHAT_HELP == HELP
    assert apps_cli.ACTIONS == actions.ACTIONS
    assert apps_cli.DISTILL_STUDENTS == distill.STUDENTS and apps_cli.DISTILL_LABELS_FILE == distill.LABELS_FILE
    assert f"from {', '.join(MODELS)} (default {DEFAULT_MODELS})" in experiments_cli.COMPARE_MODELS_HELP
