"""llama.cpp itself reads groklm's GGUF exports (slow; needs llama-cpp-python).

The other export tests check the files with transformers and gguf's reader; this runs the
engine the files are for. llama-cpp-python has no binary wheel on PyPI: `pip install
llama-cpp-python` builds llama.cpp from source with the machine's C++ compiler (5-10 minutes
on 2 cores), so it is no dependency of the project, not even a test extra; these tests skip
without it. Run with `pytest -m slow tests/test_gguf_llama_cpp.py`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

llama_cpp = pytest.importorskip("llama_cpp")

from groklm.interop.gguf_export import export_gguf  # noqa: E402
from groklm.interop.imports import import_run  # noqa: E402
from groklm.runs import load  # noqa: E402
from groklm.tokenizer import Conventions, Tokenizer  # noqa: E402
from groklm.tokenizer.chat import render_prompt, render_text  # noqa: E402

from helpers.runs import tiny_run  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]

CORPUS = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs!\n"
    "Sphinx of black quartz, judge my vow. naive cafe, deja vu.\n"
    "def f(x):\n    return x ** 2  # squares\n\n"
) * 8
TEXT = "The lazy fox's box: deja vu!\n\n    return x ** 2"
LLAMA = dict(pos="rope", norm="rmsnorm", mlp="swiglu", bias=False, n_layer=2, n_head=4, n_kv_head=2, n_embd=64,
             tie_embeddings=False, rope_theta=500.0, norm_eps=1e-6)
GPT2 = dict(pos="learned", norm="layernorm", mlp="gelu", n_layer=2, n_head=4, n_embd=64)


def llama_cpp_logits(path, ids: list[int]) -> np.ndarray:
    """llama.cpp's logits at every position of `ids` (float32, on the CPU)."""
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=max(64, len(ids) + 8), logits_all=True, n_threads=2,
                          verbose=False)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32), llm


@pytest.mark.parametrize("shape", [LLAMA, GPT2], ids=["llama", "gpt2"])
def test_llama_cpp_tokenizes_and_computes_as_groklm(tmp_path, shape):
    tokenizer = Tokenizer.train(CORPUS, 330, pattern="gpt2").with_conventions(Conventions(eos_token="<|im_end|>"))
    tiny_run(tmp_path / "run", tokenizer, **shape)
    model, tokenizer = load(tmp_path / "run")
    export_gguf(tmp_path / "run", tmp_path / "model.gguf", "f32")
    ids = tokenizer.encode(TEXT)
    theirs, llm = llama_cpp_logits(tmp_path / "model.gguf", ids)
    assert llm.tokenize(TEXT.encode(), add_bos=False, special=False) == ids
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0][0].numpy()
    diff = np.abs(theirs - ours[:, : theirs.shape[1]]).max()
    print(f"llama.cpp vs groklm, tiny {shape['pos']} model, f32: max |logit diff| {diff:.2e}")
    assert diff < 1e-3


@pytest.mark.parametrize("quant", ["f32", "q8_0"])
def test_llama_cpp_runs_the_exported_smollm2(tmp_path, quant):
    """The real SmolLM2-135M-Instruct, imported and exported again: llama.cpp's next-token
    choices over a chat prompt are ours (f32: every position; q8_0: nearly every)."""
    import_run("smollm2-135m-instruct", tmp_path / "smol")
    model, tokenizer = load(tmp_path / "smol")
    export_gguf(tmp_path / "smol", tmp_path / "smol.gguf", quant)
    messages = [{"role": "user", "content": "Name three colours of the rainbow."}]
    prompt, ids = render_text(tokenizer, messages, add_generation_prompt=True), render_prompt(tokenizer, messages)
    theirs, llm = llama_cpp_logits(tmp_path / "smol.gguf", ids)
    assert llm.tokenize(prompt.encode(), add_bos=False, special=True) == ids
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0][0].numpy()
    agree = float((theirs.argmax(-1) == ours.argmax(-1)).mean())
    diff = np.abs(theirs - ours)
    print(f"llama.cpp vs groklm, SmolLM2 {quant}: |logit diff| max {diff.max():.2e} mean {diff.mean():.2e}, "
          f"same next token at {agree:.0%} of {len(ids)} positions")
    if quant == "f32":
        assert agree == 1.0 and diff.mean() < 1e-2
    else:
        assert agree >= 0.9 and diff.mean() < 0.1 * ours.std()
