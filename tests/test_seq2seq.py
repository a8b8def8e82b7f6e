"""Seq2seq: the synthetic tasks, the encoder-decoder's attention, attention beating the
fixed-size state on long inputs, and the `groklm seq2seq train|eval` run directories."""

from __future__ import annotations

import json

import pytest
import torch

from groklm.cli.main import main
from groklm.errors import CheckpointError, ConfigError
from groklm.model.seq2seq import (
    BOS,
    EOS,
    FIRST_SYMBOL,
    Seq2Seq,
    Seq2SeqConfig,
    TaskConfig,
    exact_match_by_length,
    make_batch,
    symbol_names,
    transduce,
)
from groklm.train.seq2seq import evaluate_runs, load_seq2seq, train_seq2seq

# Reversal of up to 10 symbols: long enough for the fixed-size state to fail, learnable with
# attention in a couple of hundred small steps.
TASK = {"task": "reverse", "n_symbols": 10, "min_len": 1, "max_len": 10}
FAST = {**TASK, "n_embd": 32, "n_hidden": 64, "batch_size": 32, "max_iters": 200, "eval_interval": 200,
        "eval_iters": 4, "log_interval": 50, "lr": 3e-3, "device": "cpu"}


# ---- the tasks -------------------------------------------------------------------------------


def test_reverse_and_translate_targets():
    reverse = TaskConfig(task="reverse", n_symbols=5)
    source = torch.tensor([[2, 3, 4, 5, 6]])
    assert transduce(reverse, source).tolist() == [[6, 5, 4, 3, 2]]
    translate = TaskConfig(task="translate", n_symbols=5)
    # Each symbol has one translation, and distinct symbols distinct ones (a dictionary).
    dictionary = {s: transduce(translate, torch.tensor([[s]])).item() for s in range(FIRST_SYMBOL, FIRST_SYMBOL + 5)}
    assert sorted(dictionary.values()) == list(range(FIRST_SYMBOL, FIRST_SYMBOL + 5))
    # Adjacent pairs swap; an odd last word stays last.
    assert transduce(translate, source).tolist() == [[dictionary[3], dictionary[2], dictionary[5], dictionary[4], dictionary[6]]]


def test_batches_frame_the_target_with_bos_and_eos():
    task = TaskConfig(**TASK)
    source, inputs, targets = make_batch(task, 7, 4, torch.Generator().manual_seed(0))
    assert source.shape == (4, 7) and inputs.shape == targets.shape == (4, 8)
    assert (inputs[:, 0] == BOS).all() and (targets[:, -1] == EOS).all()
    assert torch.equal(inputs[:, 1:], targets[:, :-1]) and torch.equal(targets[:, :-1], source.flip(1))
    assert source.min() >= FIRST_SYMBOL and source.max() < task.vocab_size
    assert symbol_names(task, [BOS, EOS, FIRST_SYMBOL, FIRST_SYMBOL + 2]) == ["<bos>", "<eos>", "a", "c"]


def test_bad_task_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="task must be one of"):
        TaskConfig(task="sort")
    with pytest.raises(ConfigError, match="min_len"):
        TaskConfig(min_len=5, max_len=3)


# ---- the model -------------------------------------------------------------------------------


def test_attention_weights_are_a_distribution_over_the_source():
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(vocab_size=12, n_embd=8, n_hidden=16)).eval()
    source, inputs, _ = make_batch(TaskConfig(**TASK), 6, 3, torch.Generator().manual_seed(1))
    states, final = model.encode(source)
    logits, alignment = model.decode(states, final, inputs)
    assert logits.shape == (3, 7, 12) and alignment.shape == (3, 7, 6)
    torch.testing.assert_close(alignment.sum(-1), torch.ones(3, 7))
    # Greedy decoding is teacher forcing on its own outputs.
    tokens, greedy_alignment = model.greedy(source, 7)
    forced, forced_alignment = model.decode(states, final, torch.cat([torch.full((3, 1), BOS), tokens[:, :-1]], 1))
    assert torch.equal(forced.argmax(-1), tokens)
    torch.testing.assert_close(forced_alignment, greedy_alignment)


def test_without_attention_the_decoder_sees_only_the_final_state():
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(vocab_size=12, n_embd=8, n_hidden=16, attention=False)).eval()
    source = torch.randint(FIRST_SYMBOL, 12, (2, 5))
    states, final = model.encode(source)
    other_states = torch.randn_like(states)  # everything but the final state, replaced
    logits, alignment = model.decode(states, final, torch.full((2, 3), BOS))
    assert alignment is None
    torch.testing.assert_close(model.decode(other_states, final, torch.full((2, 3), BOS))[0], logits)


# ---- the claim: attention holds where the fixed-size state breaks -----------------------------


def test_attention_beats_the_fixed_state_on_long_inputs(tmp_path):
    """A few seconds of training each: on the longest inputs the attention model gets whole
    reversals right far more often than the same model without attention."""
    task = TaskConfig(**TASK)
    long = [7, 8, 9]
    scores = {}
    for attention in (True, False):
        run = train_seq2seq(tmp_path / str(attention), {**FAST, "attention": attention}, progress=False)
        model, _ = load_seq2seq(run)
        by_length = exact_match_by_length(model, task, [2, *long], n=100)
        scores[attention] = sum(by_length[n] for n in long) / len(long)
        assert by_length[2] > 0.9, (attention, by_length)  # both have learned the task on short inputs
    assert scores[True] > scores[False] + 0.15, scores


# ---- the commands ----------------------------------------------------------------------------


def test_train_and_eval_commands_write_run_dirs_accuracy_and_alignment(tmp_path, capsys):
    settings = [f"{k}={v}" for k, v in {**FAST, "max_iters": 20, "eval_interval": 10, "log_interval": 5}.items()]
    main(["seq2seq", "train", "--out", str(tmp_path / "attn"), "--no-progress", "--set", *settings])
    main(["seq2seq", "train", "--out", str(tmp_path / "plain"), "--no-progress", "--set", *settings, "attention=false"])
    config = json.loads((tmp_path / "attn" / "config.json").read_text())
    assert config["arch"] == "seq2seq" and config["data"]["task"]["max_len"] == 10 and config["model"]["vocab_size"] == 12
    records = [json.loads(line) for line in (tmp_path / "attn" / "metrics.jsonl").read_text().splitlines()]
    assert "val_token_accuracy" in records[-1] and (tmp_path / "attn" / "loss.png").is_file()
    capsys.readouterr()
    main(["seq2seq", "eval", str(tmp_path / "attn"), str(tmp_path / "plain"), "--out", str(tmp_path / "eval"),
          "--n", "10", "--max-len", "14"])
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "eval" / "accuracy.json").read_text())
    assert set(results) == {"attn", "plain"}
    assert list(results["attn"]["exact_match"]) == [str(n) for n in range(1, 15)]
    assert results["attn"]["attention"] and not results["plain"]["attention"]
    assert (tmp_path / "eval" / "accuracy.png").is_file() and (tmp_path / "eval" / "alignment_attn.png").is_file()
    assert not (tmp_path / "eval" / "alignment_plain.png").exists()
    assert "length" in printed and "alignment_attn.png" in printed


def test_seq2seq_resume_matches_an_uninterrupted_run(tmp_path):
    settings = {**FAST, "max_iters": 20, "eval_interval": 10, "lr_decay_iters": 20}
    straight = train_seq2seq(tmp_path / "straight", settings, progress=False)
    half = train_seq2seq(tmp_path / "half", {**settings, "max_iters": 10}, progress=False)
    train_seq2seq(half, {"max_iters": 20}, resume=True, progress=False)
    last = [json.loads((run / "metrics.jsonl").read_text().splitlines()[-1]) for run in (straight, half)]
    assert last[0]["loss"] == pytest.approx(last[1]["loss"], rel=1e-5)
    with pytest.raises(ConfigError, match="fixed once trained"):
        train_seq2seq(half, {"n_hidden": 8}, resume=True, progress=False)


def test_seq2seq_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="vocab_size follows the task"):
        train_seq2seq(tmp_path / "a", {"vocab_size": 40})
    with pytest.raises(ConfigError, match="unknown config key"):
        train_seq2seq(tmp_path / "b", {"n_head": 4})
    from groklm.rundir import write_json

    write_json(tmp_path / "gpt" / "config.json", {"model": {}, "arch": "gpt"})
    with pytest.raises(CheckpointError, match="not a seq2seq run"):
        evaluate_runs([tmp_path / "gpt"], tmp_path / "out")
