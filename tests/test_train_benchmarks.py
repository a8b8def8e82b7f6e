"""The benchmarks' cheap promises: gpu.py refuses cleanly without a GPU and knows its peaks."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_peak_flops_from_the_device_name():
    gpu = load("gpu")
    assert gpu.peak_flops("NVIDIA H200", None) == 989e12
    assert gpu.peak_flops("NVIDIA A100-SXM4-80GB", None) == 312e12
    assert gpu.peak_flops("NVIDIA GeForce RTX 4090", None) is None
    assert gpu.peak_flops("NVIDIA A100", 1e12) == 1e12


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_benchmark_without_cuda_says_so():
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert "needs a CUDA GPU" in done.stderr and "Traceback" not in done.stderr
