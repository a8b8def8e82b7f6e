"""Shared test settings and the fixtures several test modules use (pytest finds them here without
an import). Shared plain helpers live in tests/helpers/."""

import os
from pathlib import Path

import httpx
import pytest
import torch

from helpers.preferences import easy_pairs, preference_base, write_pairs
from helpers.servers import shared_server

# Tests never write traces into the user's home directory (tests of tracing set their own file).
os.environ["GROKLM_TRACES"] = "off"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and much faster than on two when the machine is busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def traces(tmp_path, monkeypatch):
    """This test's spans go to its own file (never ~/.groklm), also from its subprocesses.

    The apps test modules switch it on for every test with `pytestmark = pytest.mark.usefixtures("traces")`."""
    # Imported here, not at the top: importing groklm.apps takes seconds, and every test session
    # loads this file, most of them for tests that never trace.
    from groklm.apps import tracing

    path = tmp_path / "traces.sqlite"
    monkeypatch.setenv(tracing.ENV_PATH, str(path))
    monkeypatch.setattr(tracing, "_tracer", tracing.Tracer(path))
    return tracing.get_tracer()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """The reward and DPO tests' starting run (helpers/preferences.py), built once per module."""
    return preference_base(tmp_path_factory.mktemp("base") / "run")


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory) -> tuple[Path, Path]:
    """(train.jsonl, test.jsonl) of easy preference pairs for the reward and DPO tests."""
    folder = tmp_path_factory.mktemp("pairs")
    return write_pairs(folder / "train.jsonl", easy_pairs(400, seed=1)), write_pairs(folder / "test.jsonl", easy_pairs(64, seed=2))


@pytest.fixture(scope="module")
def server():
    """The tiny run's `groklm serve` process that the server test modules share (helpers.servers);
    a module that needs a server of its own defines its own `server`."""
    return shared_server()


@pytest.fixture(scope="module")
def http(server):
    """A client of `server`, with its key."""
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as client:
        yield client
