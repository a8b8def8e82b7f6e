"""SPIN: the pairs (the data's reply chosen, the model's own rejected, equal ones dropped), the
loss against TRL's DPO sigmoid loss on a SPIN batch, iterations that lower the loss on their
pairs, one run directory per iteration, resume, convergence, LoRA, the CLI, and the clear
errors. The tiny run is the DPO tests' (the `base` fixture in conftest.py)."""

from __future__ import annotations

import json
import math
import random
import shutil

import pytest
import torch

from groklm.errors import ConfigError, DataError
from groklm.eval.harness import generate_answers
from groklm.model import GPT
from groklm.model.lora import ADAPTERS_FILE
from groklm.runs import load
from groklm.tokenizer.char import CharTokenizer
from groklm.train.dpo import dpo_loss_fn
from groklm.train.preferences import collate, encode_pairs, load_pairs, token_logps
from groklm.train.spin import conversation_to_pair, self_play_pairs, train_spin

from helpers.preferences import CHARS, FAST, trl_losses

REPLY_TOKENS = 6  # the tiny model's replies: short, so generation is quick
SETTINGS = dict(prompts=48, beta=0.5, temperature=0.0, max_new_tokens=REPLY_TOKENS, progress=False)  # greedy: checkable
TRAIN = {**FAST, "max_iters": 30}


def conversations(n: int, seed: int = 0) -> list[dict]:
    """Chats whose last reply repeats the user's word and says "yes"; every third one has an earlier exchange."""
    rng = random.Random(seed)
    word = lambda: "".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 5)))  # noqa: E731
    chats = []
    for i in range(n):
        w = word()
        earlier = [{"role": "user", "content": word()}, {"role": "assistant", "content": "ok"}] if i % 3 == 0 else []
        chats.append({"messages": [*earlier, {"role": "user", "content": w}, {"role": "assistant", "content": f"{w} yes"}]})
    return chats


def write_chats(path, chats: list[dict]):
    path.write_text("".join(json.dumps(c) + "\n" for c in chats))
    return path


@pytest.fixture(scope="module")
def chats(tmp_path_factory):
    return write_chats(tmp_path_factory.mktemp("chats") / "chats.jsonl", conversations(300, seed=1))


@pytest.fixture(scope="module")
def spun(base, chats, tmp_path_factory):
    """Two SPIN iterations of the tiny run, shared by the tests that only read them."""
    out = tmp_path_factory.mktemp("spin") / "out"
    train_spin(base, str(chats), out, iterations=2, overrides=TRAIN, **SETTINGS)
    return out


# ---- the pairs --------------------------------------------------------------------------------


def test_a_pair_is_the_conversation_before_its_last_reply_and_that_reply():
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "abc"}, {"role": "assistant", "content": "abc yes"}]
    pair = conversation_to_pair({"task": "echo", "messages": messages}, "here")
    assert pair == {"task": "echo", "prompt": messages[:3], "chosen": "abc yes"}
    with pytest.raises(DataError, match="no assistant reply"):
        conversation_to_pair({"messages": [{"role": "user", "content": "hi"}]}, "here")


def test_chosen_is_the_datas_reply_rejected_the_models_and_equal_replies_are_dropped(base):
    model, tokenizer = load(base)
    data = [conversation_to_pair(c, "chat") for c in conversations(12, seed=3)]
    replies = generate_answers(model, tokenizer, [d["prompt"] for d in data], max_new_tokens=REPLY_TOKENS)
    for i in (1, 4, 5):  # the data already says what the model says: no signal in these
        data[i]["chosen"] = replies[i]
    pairs, dropped = self_play_pairs(model, tokenizer, data, REPLY_TOKENS)
    kept = [i for i in range(12) if i not in (1, 4, 5)]
    assert dropped == 3 and len(pairs) == 9
    assert [p["prompt"] for p in pairs] == [data[i]["prompt"] for i in kept]
    assert [p["chosen"] for p in pairs] == [data[i]["chosen"] for i in kept]
    assert [p["rejected"] for p in pairs] == [replies[i] for i in kept]


def test_a_model_that_writes_the_datas_replies_has_converged(base, tmp_path):
    model, tokenizer = load(base)
    chats = conversations(30, seed=4)
    replies = generate_answers(model, tokenizer, [c["messages"][:-1] for c in chats], max_new_tokens=REPLY_TOKENS)
    for chat, reply in zip(chats, replies):
        chat["messages"][-1]["content"] = reply
    data = write_chats(tmp_path / "own.jsonl", chats)
    summary = train_spin(base, str(data), tmp_path / "out", iterations=3, overrides=TRAIN,
                         **{**SETTINGS, "prompts": 20})
    assert summary == [{"iteration": 1, "prompts": 20, "pairs": 0, "dropped": 20, "val_prompts": 2, "val_pairs": 0,
                        "val_dropped": 2, "generate_s": summary[0]["generate_s"], "run": str(base), "converged": True}]
    assert not (tmp_path / "out" / "iter-1").exists()


# ---- the loss ---------------------------------------------------------------------------------


def spin_batch(run):
    """The pairs of a SPIN directory's first iteration, as one batch."""
    pairs, _ = load_pairs(str(run.parent / "pairs" / "iter-1.jsonl"), str(run.parent / "pairs" / "iter-1.val.jsonl"))
    return collate(encode_pairs(CharTokenizer(CHARS), pairs, 64))


def test_the_spin_loss_is_trls_dpo_sigmoid_loss_against_the_previous_iteration(base, spun):
    """Iteration 2's loss on its batch: the policy is iteration 2's model, the reference iteration 1's."""
    ids, response, lengths = spin_batch(spun / "iter-2")
    policy, reference = GPT.from_run(spun / "iter-2").eval(), GPT.from_run(spun / "iter-1")
    with torch.no_grad():
        ours, stats = dpo_loss_fn(reference, 0.5, "sigmoid", 0.0)(policy, (ids, response, lengths))
        per_token = token_logps(policy, ids)[:, 1:]
        ref = (token_logps(reference, ids) * response).sum(dim=1)
    theirs, _ = trl_losses(per_token, ref, response, "sigmoid", 0.5)
    assert stats["rewards/margins"].abs() > 0.1  # the two models differ: the check has teeth
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)


def test_an_iteration_lowers_the_spin_loss_on_its_pairs(base, spun):
    ids, response, lengths = spin_batch(spun / "iter-1")
    loss_fn = dpo_loss_fn(GPT.from_run(base), 0.5, "sigmoid", 0.0)
    with torch.no_grad():
        before, _ = loss_fn(GPT.from_run(base).eval(), (ids, response, lengths))
        after, stats = loss_fn(GPT.from_run(spun / "iter-1").eval(), (ids, response, lengths))
    assert before.item() == pytest.approx(math.log(2))  # policy = reference: no preference yet
    assert after.item() < 0.5 and stats["rewards/margins"] > 1.0 and stats["accuracy"] > 0.9


# ---- the iterations ---------------------------------------------------------------------------


def test_each_iteration_is_a_dpo_run_against_the_previous_one(base, spun):
    summary = [json.loads(line) for line in (spun / "summary.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in summary] == [1, 2] and [r["run"] for r in summary] == [str(spun / "iter-1"), str(spun / "iter-2")]
    for record, parent in zip(summary, (base, spun / "iter-1")):
        config = json.loads((spun / f"iter-{record['iteration']}" / "config.json").read_text())
        assert config["parent"] == str(parent.resolve())
        assert config["dpo"] == {"beta": 0.5, "loss": "sigmoid", "label_smoothing": 0.0, "sft_weight": 0.0}
        assert config["train"]["max_iters"] == 30
        assert record["prompts"] == 48 and record["pairs"] + record["dropped"] == 48 and record["val_prompts"] == 4
        pairs = (spun / "pairs" / f"iter-{record['iteration']}.jsonl").read_text().splitlines()
        assert len(pairs) == record["pairs"] and config["data"]["spec"] == str(spun / "pairs" / f"iter-{record['iteration']}.jsonl")
        assert record["loss_end"] < record["loss_start"] and record["margin_end"] > record["margin_start"]
        assert record["val_margin"] > 0 and record["steps"] == 30
    # Iteration 2 answered with iteration 1's model: its rejected replies are that model's.
    model, tokenizer = load(spun / "iter-1")
    pair = json.loads((spun / "pairs" / "iter-2.jsonl").read_text().splitlines()[0])
    assert generate_answers(model, tokenizer, [pair["prompt"]], max_new_tokens=REPLY_TOKENS) == [pair["rejected"]]


def test_resume_skips_finished_iterations_and_keeps_the_settings(base, chats, spun, tmp_path):
    out = shutil.copytree(spun, tmp_path / "out")
    weights = {t: (out / f"iter-{t}" / "model.safetensors").read_bytes() for t in (1, 2)}
    with pytest.raises(ConfigError, match="--resume"):
        train_spin(base, str(chats), out, iterations=3, overrides=TRAIN, **SETTINGS)
    with pytest.raises(ConfigError, match="beta"):
        train_spin(None, None, out, iterations=3, beta=0.1, resume=True, progress=False)
    # An iteration cut short after its training but before its summary line: resumed, it ends the same.
    lines = (out / "summary.jsonl").read_text().splitlines(keepends=True)
    (out / "summary.jsonl").write_text(lines[0])
    train_spin(None, None, out, resume=True, progress=False)
    assert (out / "summary.jsonl").read_text().splitlines(keepends=True)[:1] == lines[:1]
    summary = train_spin(None, None, out, iterations=3, resume=True, progress=False)
    assert [r["iteration"] for r in summary] == [1, 2, 3]
    assert all((out / f"iter-{t}" / "model.safetensors").read_bytes() == weights[t] for t in (1, 2))
    assert json.loads((out / "iter-3" / "config.json").read_text())["parent"] == str(out / "iter-2")
    figures = lambda record: {k: v for k, v in record.items() if k not in ("run", "train_s")}  # noqa: E731
    assert [figures(r) for r in summary[:2]] == [figures(json.loads(line)) for line in lines]


def test_lora_iterations_merge_each_model_for_the_next(base, chats, tmp_path):
    out = tmp_path / "out"
    train_spin(base, str(chats), out, iterations=2, overrides={**TRAIN, "max_iters": 2, "lora_rank": 2}, **SETTINGS)
    for t in (1, 2):
        assert (out / f"iter-{t}.adapters" / ADAPTERS_FILE).is_file()
        assert "lora" not in json.loads((out / f"iter-{t}" / "config.json").read_text())  # a plain, merged run
    assert json.loads((out / "iter-2.adapters" / "config.json").read_text())["lora"]["base"] == str(out / "iter-1")
    GPT.from_run(out / "iter-2")


def test_cli_runs_spin(base, chats, tmp_path, capsys):
    from groklm.cli.main import main

    out = tmp_path / "out"
    main(["spin", str(base), "--data", str(chats), "--out", str(out), "--iterations", "1", "--prompts", "10",
          "--beta", "0.2", "--max-new-tokens", "4", "--temperature", "0.7", "--no-progress",
          "--set", "max_iters=2", "eval_interval=2", "eval_iters=1", "batch_size=2", "device=cpu"])
    printed = capsys.readouterr().out
    assert "iteration 1: " in printed and str(out / "iter-1") in printed
    settings = json.loads((out / "spin.json").read_text())
    assert (settings["beta"], settings["temperature"], settings["prompts"], settings["data"]) == (0.2, 0.7, 10, str(chats))
    GPT.from_run(out / "iter-1")


def test_bad_spin_input_is_a_clear_error(base, chats, tmp_path):
    for kwargs, message in [({"iterations": 0}, "iterations"), ({"prompts": 0}, "prompts"), ({"beta": 0.0}, "beta"),
                            ({"overrides": {"n_layer": "3"}}, "comes from the base run")]:
        with pytest.raises(ConfigError, match=message):
            train_spin(base, str(chats), tmp_path / "x", **{**SETTINGS, **kwargs})
    silent = write_chats(tmp_path / "silent.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}] * 3)
    with pytest.raises(DataError, match="no assistant turn"):
        train_spin(base, str(silent), tmp_path / "x", **SETTINGS)
    with pytest.raises(ConfigError, match="--data"):
        train_spin(base, None, tmp_path / "x", **SETTINGS)
    assert not (tmp_path / "x").exists()
