"""benchmarks/growth.py's cheap promises: the KV cache's bytes per position as computed from a
config are what the engine allocates, and the context section's peer really takes the other
attention path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from groklm.model import GPTConfig, attention

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def growth():
    # growth.py imports its sibling benchmarks by name, as it does when run as a script
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("growth", REPO / "benchmarks" / "growth.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return module


def test_kv_bytes_per_token_match_the_engines_allocation(growth):
    shape = dict(vocab_size=100, block_size=64, n_layer=3, n_head=6, n_embd=96)
    grouped = growth.kv_row(GPTConfig(**shape, n_kv_head=2), max_batch=2, cache_mb=1)
    full = growth.kv_row(GPTConfig(**shape), max_batch=2, cache_mb=1)
    for row in (grouped, full):
        for dtype in ("float32", "bfloat16"):
            assert row[dtype]["computed_bytes_per_token"] == row[dtype]["allocated_bytes_per_token"]
    # 2 (key, value) x 3 layers x 2 kv heads x 16 dims x 4 bytes, a third of full attention's
    assert grouped["float32"]["computed_bytes_per_token"] == 768
    assert full["float32"]["computed_bytes_per_token"] == 3 * 768
    assert grouped["bfloat16"]["computed_bytes_per_token"] == 384


def test_the_context_peer_takes_the_other_attention_path(growth, monkeypatch):
    # context_point forces the peer's path by replacing attention's chooser, as its own process may;
    # here every call gets the original back
    original = attention.written_out_is_faster
    chosen = growth.groklm_path(64, growth.resolve_dtype(growth.TrainConfig(), torch.device("cpu")))
    monkeypatch.setattr(attention, "written_out_is_faster", original)
    fused = growth.context_point(64, growth.FUSED, tokens_per_step=64, steps=1)
    monkeypatch.setattr(attention, "written_out_is_faster", original)
    written_out = growth.context_point(64, growth.WRITTEN_OUT, tokens_per_step=64, steps=1)
    assert fused["kernels"] and not written_out["kernels"]
    assert fused["groklm_path"] == (chosen == growth.FUSED)
    assert written_out["groklm_path"] == (chosen == growth.WRITTEN_OUT)
    assert fused["tokens_per_s"] > 0 and fused["peak_rss_mb"] > 0
