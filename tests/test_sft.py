"""SFT: the loss mask, packing, a short fine-tune that learns, exact resume, the run dir, bad input.

Every run starts from a random-init tiny GPT saved as a run directory with a CharTokenizer, so
no pretraining is needed and a step takes milliseconds.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import groklm
from groklm.cli.train import register_sft
from groklm.errors import CheckpointError, ConfigError, DataError
from groklm.model import GPT, GPTConfig
from groklm.model.gpt import IGNORE_INDEX
from groklm.tokenizer import load_tokenizer
from groklm.tokenizer.base import IM_END, IM_START
from groklm.tokenizer.char import CharTokenizer
from groklm.tokenizer.chat import render_chat
from groklm.train.packing import batch_rows, conversation_example, pack
from groklm.train.sft import build_rows, load_records, sft

from helpers.runs import read_metrics, tiny_run

CHARS = "abcdefghijklmnopqrstuvwxyz0123456789+=?!., \n"
FAST = {"max_iters": 6, "batch_size": 4, "eval_interval": 3, "eval_iters": 2, "log_interval": 1,
        "warmup_iters": 2, "device": "cpu"}


def make_base(path: Path, vocab_size: int | None = None) -> Path:
    """The SFT tests' base: a random-init tiny GPT and a character tokenizer over CHARS."""
    return tiny_run(path, CHARS, block_size=80, n_embd=32, vocab_size=vocab_size)


def chats(n: int, seed: int = 0) -> list[dict]:
    """Additions, some with a system prompt, some two turns long."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        messages = [{"role": "system", "content": "be brief."}] if i % 3 == 0 else []
        messages += [{"role": "user", "content": f"{a}+{b}=?"}, {"role": "assistant", "content": str(a + b)}]
        if i % 4 == 0:
            messages += [{"role": "user", "content": "again!"}, {"role": "assistant", "content": str(a + b)}]
        records.append({"messages": messages})
    return records


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ---- the loss mask ----------------------------------------------------------------------------


def test_mask_trains_on_assistant_content_and_its_end_token_only():
    tokenizer = CharTokenizer(sorted(CHARS))
    start, end = tokenizer.special_tokens[IM_START], tokenizer.special_tokens[IM_END]
    messages = [{"role": "system", "content": "hi."}, {"role": "user", "content": "1+1=?"},
                {"role": "assistant", "content": "2"}, {"role": "user", "content": "ok"},
                {"role": "assistant", "content": "yes"}]
    # The expected sequence, piece by piece: (text or special id, trained?).
    pieces = [(start, 0), ("system\n", 0), ("hi.", 0), (end, 0), ("\n", 0),
              (start, 0), ("user\n", 0), ("1+1=?", 0), (end, 0), ("\n", 0),
              (start, 0), ("assistant\n", 0), ("2", 1), (end, 1), ("\n", 0),
              (start, 0), ("user\n", 0), ("ok", 0), (end, 0), ("\n", 0),
              (start, 0), ("assistant\n", 0), ("yes", 1), (end, 1), ("\n", 0)]
    ids, flags = [], []
    for piece, trained in pieces:
        piece_ids = tokenizer.encode(piece) if isinstance(piece, str) else [piece]
        ids += piece_ids
        flags += [bool(trained)] * len(piece_ids)
    assert render_chat(tokenizer, messages) == (ids, flags)

    (inputs, targets), truncated = conversation_example(ids, flags, block_size=100)
    assert not truncated and inputs == ids[:-1] and len(targets) == len(inputs)
    for t, target in enumerate(targets):  # position t predicts token t+1, trained only if it is the assistant's
        assert target == (ids[t + 1] if flags[t + 1] else IGNORE_INDEX), t
    assert tokenizer.decode([t for t in targets if t != IGNORE_INDEX]) == f"2{IM_END}yes{IM_END}"


def test_long_conversation_is_truncated_to_block_size():
    ids, flags = list(range(30)), [i >= 10 for i in range(30)]
    (inputs, targets), truncated = conversation_example(ids, flags, block_size=16)
    assert truncated and inputs == ids[:16] and targets[-1] == 16 and targets[8] == IGNORE_INDEX


# ---- packing ----------------------------------------------------------------------------------


def random_examples(n: int, seed: int = 0, block_size: int = 16):
    g = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(n):
        length = int(torch.randint(2, block_size + 1, (1,), generator=g))
        x = torch.randint(0, 30, (length,), generator=g).tolist()
        y = [t if k % 2 else IGNORE_INDEX for k, t in enumerate(torch.randint(0, 30, (length,), generator=g).tolist())]
        y[-1] = 7  # at least one trained target
        examples.append((x, y))
    return examples


def test_packing_keeps_conversations_whole_and_separate():
    examples = random_examples(40)
    rows = pack(examples, block_size=16, pad_id=99)
    assert rows.inputs.shape == rows.targets.shape == rows.doc_ids.shape == (len(rows), 16)
    assert len(rows) < len(examples)  # short chats share rows
    found = []
    for r in range(len(rows)):
        docs = rows.doc_ids[r].tolist()
        assert docs == sorted(docs)  # each chat is one contiguous span, in order
        for d in sorted(set(docs)):
            span = [k for k, v in enumerate(docs) if v == d]
            x, y = rows.inputs[r, span].tolist(), rows.targets[r, span].tolist()
            if d == len(set(docs)) - 1 and all(v == 99 for v in x) and all(v == IGNORE_INDEX for v in y):
                continue  # the row's padding
            found.append((x, y))
    assert found == examples  # greedy packing keeps the order, never splits or drops a chat
    again = pack(examples, block_size=16, pad_id=99)
    assert torch.equal(again.inputs, rows.inputs) and torch.equal(again.doc_ids, rows.doc_ids)


def test_packed_loss_equals_mean_over_conversations_one_at_a_time():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=32)).eval()
    examples = random_examples(12, seed=1)
    rows = pack(examples, block_size=16)
    with torch.no_grad():
        _, packed_loss = model(rows.inputs, rows.targets, rows.doc_ids)
        total, count = 0.0, 0
        for x, y in examples:
            logits, _ = model(torch.tensor([x]))
            total += F.cross_entropy(logits[0], torch.tensor(y), ignore_index=IGNORE_INDEX, reduction="sum").item()
            count += sum(t != IGNORE_INDEX for t in y)
    assert packed_loss.item() == pytest.approx(total / count, rel=1e-5)


def test_batch_rows_are_a_function_of_seed_and_step_and_cover_each_epoch():
    assert batch_rows(3, 5, 4, 10) == batch_rows(3, 5, 4, 10)
    assert batch_rows(3, 0, 4, 10) != batch_rows(4, 0, 4, 10)
    seen = [r for step in range(5) for r in batch_rows(3, step, 4, 10)]  # 2 epochs of 10 rows
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))


# ---- training -----------------------------------------------------------------------------------


def test_sft_learns_and_writes_a_loadable_run(tmp_path):
    base = make_base(tmp_path / "base")
    data = write_jsonl(tmp_path / "chats.jsonl", chats(200))
    over = {**FAST, "max_iters": 60, "eval_interval": 30, "lr": 3e-3, "warmup_iters": 5, "log_interval": 5}
    run = sft(base, data, tmp_path / "sft", overrides=over, progress=False)
    records = read_metrics(run)
    assert records[-1]["loss"] < 0.6 * records[0]["loss"]  # the assistant tokens' loss falls clearly
    assert records[-1]["val_loss"] < records[0]["loss"]
    config = json.loads((run / "config.json").read_text())
    assert config["stage"] == "sft" and config["arch"] == "gpt" and config["parent"] == str(base.resolve())
    assert config["model"] == json.loads((base / "config.json").read_text())["model"]
    assert config["data"]["conversations"] + config["data"]["val_conversations"] == 200
    assert config["train"]["lr"] == 3e-3 and config["train"]["weight_decay"] == 0.0  # SFT default kept
    assert (run / "loss.png").is_file()
    model, tokenizer = groklm.load(run)
    assert isinstance(GPT.from_run(run), GPT) and tokenizer.to_dict() == load_tokenizer(base / "tokenizer").to_dict()
    assert not torch.equal(model.wte.weight, GPT.from_run(base).wte.weight)
    # An SFT run is itself a base run for another round.
    again = sft(run, chats(20, seed=1), tmp_path / "sft2", overrides={**FAST, "max_iters": 2}, progress=False)
    assert json.loads((again / "config.json").read_text())["parent"] == str(run.resolve())


def test_resumed_sft_matches_an_uninterrupted_run(tmp_path):
    base = make_base(tmp_path / "base")
    data = write_jsonl(tmp_path / "chats.jsonl", chats(60))
    # lr_decay_iters fixed: the schedule must not depend on where the first part stopped.
    over = {**FAST, "max_iters": 12, "eval_interval": 6, "lr_decay_iters": 12, "dropout": 0.1}
    straight = read_metrics(sft(base, data, tmp_path / "straight", overrides=over, progress=False))
    part = tmp_path / "part"
    sft(base, data, part, overrides={**over, "max_iters": 6}, progress=False)
    base.rename(tmp_path / "moved")  # a resumed run needs only itself: config, tokenizer copy, checkpoint
    resumed = read_metrics(sft(None, None, part, overrides={"max_iters": 12}, resume=True, progress=False))
    drop = ("elapsed", "tokens_per_sec")
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed] == \
        [{k: v for k, v in r.items() if k not in drop} for r in straight]


def test_synthetic_data_and_validation_split(tmp_path):
    records, spec = load_records("synthetic:arithmetic", False, "train", synthetic_n=5)
    assert spec == "synthetic:arithmetic" and len(records) == 5 and all("messages" in r for r in records)
    with pytest.raises(ConfigError, match="unknown task"):
        load_records("synthetic:nope", False, "train", synthetic_n=5)
    chatty, _ = load_records("synthetic:arithmetic", False, "train", synthetic_n=5, synthetic_chatty=1.0)
    assert [r["messages"][:-1] for r in chatty] == [r["messages"][:-1] for r in records]
    assert all(c["messages"][-1] != r["messages"][-1] for c, r in zip(chatty, records))  # every reply in the wordier style
    tokenizer = CharTokenizer(sorted(CHARS))
    train_rows, val_rows, info = build_rows(tokenizer, chats(40), None, 80, 0, False, 5)
    assert info["val_conversations"] == 2 and info["conversations"] == 38 and info["val"] is None
    val_file = write_jsonl(tmp_path / "val.jsonl", chats(7, seed=3))
    _, _, info = build_rows(tokenizer, chats(40), str(val_file), 80, 0, False, 5)
    assert info["val_conversations"] == 7 and info["conversations"] == 40


def test_long_conversations_warn_and_are_counted(tmp_path):
    tokenizer = CharTokenizer(sorted(CHARS))
    long = {"messages": [{"role": "user", "content": "a" * 10}, {"role": "assistant", "content": "b" * 100}]}
    prompt_only = {"messages": [{"role": "user", "content": "a" * 100}, {"role": "assistant", "content": "b"}]}
    with pytest.warns(UserWarning) as caught:
        rows, _, info = build_rows(tokenizer, [long, prompt_only] + chats(20), chats(3), 80, 0, False, 5)
    messages = " ".join(str(w.message) for w in caught)
    assert "1 of 22 conversation(s) are longer than block_size+1=81" in messages and "dropped 1" in messages
    assert (info["truncated"], info["conversations"], info["val_conversations"]) == (1, 21, 3)
    assert int((rows.targets != IGNORE_INDEX).sum(dim=1).min()) > 0  # every row has something to learn


# ---- bad input and the command line --------------------------------------------------------------


def test_bad_input_gives_clear_errors(tmp_path):
    base = make_base(tmp_path / "base")
    good = chats(10)
    with pytest.raises(CheckpointError, match="does not exist"):
        sft(tmp_path / "missing", good, tmp_path / "a", overrides=FAST, progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(good[0]) + "\n{not json\n" + "".join(json.dumps(r) + "\n" for r in good))
    with pytest.raises(DataError, match="line 2"):
        sft(base, bad, tmp_path / "b", overrides=FAST, progress=False)
    with pytest.warns(UserWarning, match="skipped 1 bad line"):
        sft(base, bad, tmp_path / "c", overrides={**FAST, "max_iters": 1}, skip_bad_lines=True, progress=False)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no records"):
        sft(base, tmp_path / "empty.jsonl", tmp_path / "d", overrides=FAST, progress=False)
    unknown_chars = {"messages": [{"role": "user", "content": "ÄÖ"}, {"role": "assistant", "content": "x"}]}
    with pytest.raises(DataError, match="conversation 3:.*not in this character vocabulary"):
        sft(base, good, tmp_path / "e", val_data=[*good[:2], unknown_chars], overrides=FAST, progress=False)
    with pytest.raises(DataError, match="need 2 or more"):
        sft(base, good[:1],
            tmp_path / "e", overrides=FAST, progress=False)
    with pytest.raises(ConfigError, match="no SFT data"):
        sft(base, None, tmp_path / "f", overrides=FAST, progress=False)
    with pytest.raises(ConfigError, match="shape comes from the base run"):
        sft(base, good, tmp_path / "g", overrides={"n_layer": 3}, progress=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        sft(base, good, tmp_path / "c", overrides=FAST, progress=False)
    with pytest.raises(ConfigError, match="not one of stage 'sft'"):
        sft(None, good, base, resume=True, progress=False)
    small = make_base(tmp_path / "small", vocab_size=len(CHARS) + 1)  # no embedding rows for the chat tokens
    with pytest.raises(ConfigError, match="no embedding for the chat tokens"):
        sft(small, good, tmp_path / "h", overrides=FAST, progress=False)
    assert not any((tmp_path / name).exists() for name in "abdefgh")  # nothing written on a bad start


def test_a_shorter_context_for_rotary_models_only(tmp_path):
    """An imported model's 8192 positions make rows too long to train on a CPU; with rotary
    positions the same weights work at any length, so SFT may pack shorter rows."""
    rope = tiny_run(tmp_path / "rope", CHARS, block_size=80, n_embd=32, pos="rope", norm="rmsnorm", mlp="swiglu")
    run = sft(rope, chats(20), tmp_path / "short", overrides={**FAST, "max_iters": 1, "block_size": 40}, progress=False)
    assert json.loads((run / "config.json").read_text())["model"]["block_size"] == 40
    assert GPT.from_run(run).config.block_size == 40
    learned = make_base(tmp_path / "learned")
    with pytest.raises(ConfigError, match="block_size.*without a learned position table"):
        sft(learned, chats(20), tmp_path / "a", overrides={**FAST, "block_size": 40}, progress=False)
    with pytest.raises(ConfigError, match="cannot change \\['block_size'\\]"):
        sft(rope, chats(20), tmp_path / "b", overrides={**FAST, "block_size": 160}, progress=False)


def test_cli(tmp_path, monkeypatch, capsys):
    import argparse

    from groklm.cli.main import main

    parser = argparse.ArgumentParser(prog="groklm")
    register_sft(parser.add_subparsers())
    args = parser.parse_args(["sft", "R", "--data", "synthetic:spam", "--out", "O", "--set", "lr=1e-4", "--resume"])
    assert (args.run, args.data, args.out, args.overrides, args.resume) == ("R", "synthetic:spam", "O", ["lr=1e-4"], True)
    assert args.synthetic_chatty == 0.0
    assert parser.parse_args(["sft", "R", "--data", "synthetic", "--out", "O", "--synthetic-chatty", "0.3"]).synthetic_chatty == 0.3

    base = make_base(tmp_path / "base")
    data = write_jsonl(tmp_path / "chats.jsonl", chats(30))
    sets = [f"{k}={v}" for k, v in {**FAST, "max_iters": 3}.items()]
    main(["sft", str(base), "--data", str(data), "--out", str(tmp_path / "run"), "--no-progress", "--set", *sets])
    assert "step 3" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["sft", str(tmp_path / "nowhere"), "--data", str(data), "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 1 and "does not exist" in capsys.readouterr().err
