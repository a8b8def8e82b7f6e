"""Recurrent language models: the step-by-step Elman RNN against torch.nn.RNN, each architecture
learning through `pretrain --set arch=...`, state carried across calls, and loading by arch."""

from __future__ import annotations

import argparse
import io
import json
import random
import re
import sys

import pytest
import torch

import groklm
from groklm.apps.backends import load_backend
from groklm.cli.main import main
from groklm.cli.model import run_attention, run_sample
from groklm.data.prepare import prepare
from groklm.errors import CheckpointError, ConfigError
from groklm.infer.chat import chat_loop
from groklm.infer.decode import generate
from groklm.infer.engine import Engine
from groklm.infer.scoring import choice_logprobs
from groklm.model import GPT, RecurrentLM, RNNConfig, load_model
from groklm.model.arch import make_config
from groklm.model.rnn import ElmanRNN
from groklm.rundir import write_json
from groklm.tokenizer import Tokenizer
from groklm.train.pretrain import pretrain

from helpers.runs import read_metrics

# A few milliseconds a step for every architecture.
TINY = {"n_layer": 1, "n_embd": 32, "block_size": 16, "batch_size": 8, "max_iters": 60, "eval_interval": 30,
        "eval_iters": 2, "log_interval": 10, "warmup_iters": 5, "lr": 1e-2, "min_lr": 1e-3, "device": "cpu"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Character-level shards of a tiny, very regular corpus, with its tokenizer."""
    root = tmp_path_factory.mktemp("rnn")
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran"]
    (root / "text.txt").write_text("\n".join(" ".join(rng.choice(words) for _ in range(6)) + "." for _ in range(800)))
    prepare([str(root / "text.txt")], "char", root / "data", progress=False)
    return root / "data"


# ---- the step-by-step Elman RNN is torch.nn.RNN ---------------------------------------------


@pytest.mark.parametrize("layers", [1, 3])
def test_elman_rnn_equals_torch_rnn_given_the_same_weights(layers):
    torch.manual_seed(0)
    reference = torch.nn.RNN(5, 7, num_layers=layers, batch_first=True)
    mine = ElmanRNN(5, 7, num_layers=layers)
    assert sorted(n for n, _ in mine.named_parameters()) == sorted(n for n, _ in reference.named_parameters())
    mine.load_state_dict(reference.state_dict())
    x = torch.randn(3, 11, 5, requires_grad=True)
    h0 = torch.randn(layers, 3, 7)
    for start in (None, h0):
        out, h_n = mine(x, start)
        ref_out, ref_h_n = reference(x, start)
        torch.testing.assert_close(out, ref_out)
        torch.testing.assert_close(h_n, ref_h_n)
    # Gradients too: the same function, so the same training.
    (mine(x)[0] ** 2).sum().backward()
    grad_mine = {n: p.grad.clone() for n, p in mine.named_parameters()}
    (reference(x)[0] ** 2).sum().backward()
    for name, p in reference.named_parameters():
        torch.testing.assert_close(grad_mine[name], p.grad)


def test_elman_rnn_is_initialised_like_torch():
    mine = ElmanRNN(4, 64)
    bound = 64 ** -0.5
    for p in mine.parameters():
        assert p.abs().max() <= bound and p.std() > bound / 3


# ---- every architecture learns, through pretrain ---------------------------------------------


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru", "gpt"])
def test_each_architecture_trains_and_its_loss_falls(data, tmp_path, arch):
    extra = {"n_head": 2} if arch == "gpt" else {}
    run = pretrain(data, tmp_path / arch, overrides={**TINY, **extra, "arch": arch}, progress=False)
    records = read_metrics(run)
    config = json.loads((run / "config.json").read_text())
    assert config["arch"] == arch
    assert records[-1]["val_loss"] < 0.6 * records[0]["loss"], (arch, records[0]["loss"], records[-1]["val_loss"])
    model = load_model(run)
    assert isinstance(model, GPT if arch == "gpt" else RecurrentLM)
    assert (run / "loss.png").is_file() and (run / "checkpoint").is_dir()
    if arch != "gpt":
        assert config["model"]["cell"] == arch


def test_an_rnn_run_resumes_exactly(data, tmp_path):
    settings = {**TINY, "arch": "gru", "eval_interval": 20, "lr_decay_iters": 40}  # one schedule for both
    straight = pretrain(data, tmp_path / "straight", overrides={**settings, "max_iters": 40}, progress=False)
    first = pretrain(data, tmp_path / "resumed", overrides={**settings, "max_iters": 20}, progress=False)
    pretrain(None, first, overrides={"max_iters": 40}, resume=True, progress=False)
    assert read_metrics(straight)[-1]["loss"] == pytest.approx(read_metrics(first)[-1]["loss"], rel=1e-5)
    with pytest.raises(ConfigError, match="holds a 'gru' model"):
        pretrain(None, first, overrides={"arch": "lstm", "max_iters": 50}, resume=True, progress=False)


# ---- state, generation, loading --------------------------------------------------------------


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_carried_state_equals_reading_the_whole_sequence(cell):
    torch.manual_seed(0)
    model = RecurrentLM(RNNConfig(vocab_size=30, n_layer=2, n_embd=16, cell=cell)).eval()
    idx = torch.randint(0, 30, (2, 12))
    whole, _ = model.step(idx)
    first, state = model.step(idx[:, :5])
    rest, _ = model.step(idx[:, 5:], state)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), whole)


def test_greedy_generation_continues_the_argmax_of_a_full_forward():
    torch.manual_seed(0)
    model = RecurrentLM(RNNConfig(vocab_size=30, n_layer=1, n_embd=16, cell="lstm")).eval()
    out = generate(model, torch.tensor([[1, 2, 3]]), 6, temperature=0)
    logits, _ = model(out[:, :-1])
    assert out[0, 3:].tolist() == logits[0, 2:].argmax(-1).tolist()
    # The same seed, the same draw.
    a = generate(model, torch.tensor([[1]]), 10, seed=3)
    assert torch.equal(a, generate(model, torch.tensor([[1]]), 10, seed=3))


@pytest.fixture(scope="module")
def lstm_run(data, tmp_path_factory):
    """A tiny LSTM run, as `pretrain --set arch=lstm` writes it, with a byte-level tokenizer (any
    text encodes: chat prompts, eval tasks)."""
    root = tmp_path_factory.mktemp("lstm")
    Tokenizer.train((data.parent / "text.txt").read_text(), vocab_size=256 + 8).save(root / "tokenizer")
    prepare([str(data.parent / "text.txt")], str(root / "tokenizer"), root / "data", progress=False)
    return pretrain(root / "data", root / "run", overrides={**TINY, "arch": "lstm", "max_iters": 10}, progress=False)


def test_sample_command_and_groklm_load_read_an_rnn_run(data, tmp_path, capsys):
    run = pretrain(data, tmp_path / "lstm", overrides={**TINY, "arch": "lstm", "max_iters": 10}, progress=False)
    model, tokenizer = groklm.load(run)
    assert isinstance(model, RecurrentLM) and tokenizer.vocab_size <= model.config.vocab_size
    args = argparse.Namespace(run=run, prompt="the cat", max_new_tokens=20, temperature=0.8, top_k=None, top_p=None,
                              seed=1, device="cpu")
    run_sample(args)
    first = capsys.readouterr().out
    run_sample(args)
    assert first.startswith("the cat") and len(first) > len("the cat\n") and capsys.readouterr().out == first
    with pytest.raises(ConfigError, match="no attention"):
        run_attention(argparse.Namespace(run=run, text="the cat", out=tmp_path / "maps", device="cpu"))


RECURRENT_REFUSED = r"recurrent model \(lstm\).*serves GPT runs only"


def test_the_engine_refuses_a_recurrent_run_with_a_clear_error(lstm_run):
    """chat, serve, eval and the local backend all sample through the engine (a KV cache of
    attention keys): an LSTM run is a ConfigError naming the reason, not a crash in the cache."""
    with pytest.raises(ConfigError, match=RECURRENT_REFUSED):
        Engine.from_run(lstm_run)
    with pytest.raises(ConfigError, match=RECURRENT_REFUSED):
        load_backend(f"local:{lstm_run}")
    model, tokenizer = groklm.load(lstm_run)
    with pytest.raises(ConfigError, match=RECURRENT_REFUSED):
        chat_loop(model, tokenizer, ["hello"], out=io.StringIO(), err=io.StringIO())
    # Scoring needs no sampling: multiple choice works on a recurrent model.
    assert choice_logprobs(model, tokenizer, [{"role": "user", "content": "the"}], ["cat", "dog"]).shape == (2,)


@pytest.mark.parametrize("command", [["chat"], ["serve", "--port", "0"], ["eval", "--tasks", "arithmetic", "--n", "1"]])
def test_commands_on_a_recurrent_run_stop_with_a_message(lstm_run, command, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n"))
    with pytest.raises(SystemExit) as exit_:
        main([command[0], str(lstm_run), *command[1:]])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and re.search(RECURRENT_REFUSED, err) and "Traceback" not in err


# ---- configuration ---------------------------------------------------------------------------


def test_bad_architecture_settings_are_clear_errors(data, tmp_path):
    with pytest.raises(ConfigError, match="arch must be one of"):
        pretrain(data, tmp_path / "a", overrides={**TINY, "arch": "transformerxl"}, progress=False)
    with pytest.raises(ConfigError, match="unknown config key 'n_head'"):
        pretrain(data, tmp_path / "b", overrides={**TINY, "arch": "lstm", "n_head": 2}, progress=False)
    with pytest.raises(ConfigError, match="contradicts arch"):
        make_config("gru", {"cell": "lstm"})
    with pytest.raises(ConfigError, match="cell must be one of"):
        RNNConfig(cell="transformer")


def test_a_gpt_preset_gives_a_recurrent_model_its_shared_sizes(data, tmp_path):
    run = pretrain(data, tmp_path / "p", preset="tiny", overrides={"arch": "gru", "max_iters": 2, "eval_iters": 1,
                                                                    "batch_size": 2, "device": "cpu"}, progress=False)
    model = json.loads((run / "config.json").read_text())["model"]
    assert (model["n_layer"], model["n_embd"], model["block_size"], model["cell"]) == (4, 128, 128, "gru")


def test_load_model_refuses_runs_that_are_not_language_models(tmp_path):
    write_json(tmp_path / "config.json", {"model": {}, "arch": "seq2seq"})
    with pytest.raises(CheckpointError, match="not a language model"):
        load_model(tmp_path)
