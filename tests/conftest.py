"""Shared test settings."""

import os

import pytest
import torch

# Tests never write traces into the user's home directory (tests of tracing set their own file).
os.environ["GROKLM_TRACES"] = "off"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and much faster than on two when the machine is busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
