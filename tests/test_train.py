"""Pretraining: config and presets, schedule, optimizer groups, the run directory, bad input,
and checkpoint safety. Everything runs a tiny model on synthetic shards (no tokenizer needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from groklm.errors import CheckpointError, ConfigError, DataError
from groklm.model import GPT, GPTConfig
from groklm.train.config import PRESETS, TrainConfig, parse_set_args, preset, split_overrides
from groklm.train.loop import lr_at, param_groups, resolve_dtype
from groklm.train.pretrain import pretrain

from helpers.runs import read_metrics
from helpers.training import REPO, TINY, cli_env, make_data


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "groklm", *args], cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("data"))


# ---- configuration --------------------------------------------------------------------------


def test_presets_build_valid_configs():
    for name in PRESETS:
        model, train = preset(name)
        GPTConfig(vocab_size=128, **model)
        TrainConfig(**train)


def test_shakespeare_char_preset_is_nanogpts_cpu_recipe():
    model, train = preset("shakespeare-char")
    assert model | {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "dropout": 0.0} == model
    cfg = TrainConfig(**train)
    assert (cfg.batch_size, cfg.max_iters, cfg.lr, cfg.min_lr, cfg.eval_iters) == (12, 2000, 1e-3, 1e-4, 20)


def test_set_values_are_parsed_by_field_type():
    model, train = split_overrides(parse_set_args(["lr=3e-4", "max_iters=1e3", "compile=true", "n_layer=2",
                                                   "lr_decay_iters=none", "bias=0", "device=cpu"]), GPTConfig)
    assert model == {"n_layer": 2, "bias": False}
    assert train == {"lr": 3e-4, "max_iters": 1000, "compile": True, "lr_decay_iters": None, "device": "cpu"}


@pytest.mark.parametrize("item, message", [
    ("learning_rate=1", "unknown config key 'learning_rate'"),
    ("max_iters=2.5", "max_iters must be int"),
    ("compile=maybe", "compile must be bool"),
    ("lr", "--set expects key=value"),
])
def test_bad_set_values_raise_config_errors(item, message):
    with pytest.raises(ConfigError, match=message):
        split_overrides(parse_set_args([item]), GPTConfig)


def test_unknown_key_error_lists_known_keys():
    with pytest.raises(ConfigError) as info:
        split_overrides({"nope": "1"}, GPTConfig)
    assert "batch_size" in str(info.value) and "n_embd" in str(info.value)


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="tiny, shakespeare-char, gpt2-124m"):
        preset("huge")


def test_train_config_validation():
    with pytest.raises(ConfigError, match="min_lr"):
        TrainConfig(lr=1e-4, min_lr=1e-3)
    with pytest.raises(ConfigError, match="device"):
        TrainConfig(device="tpu")
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig(batch_size=0)


# ---- schedule and optimizer -----------------------------------------------------------------


def test_lr_schedule_warmup_then_cosine_to_min_lr():
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup_iters=10, max_iters=110)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)  # warmup ends at the peak
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.55)  # halfway down the cosine
    assert lr_at(110, cfg) == pytest.approx(0.1)
    assert lr_at(500, cfg) == pytest.approx(0.1)
    steps = [lr_at(s, cfg) for s in range(10, 110)]
    assert all(a >= b for a, b in zip(steps, steps[1:]))


@pytest.mark.parametrize("tie", [True, False])
def test_weight_decay_only_on_matrices_not_embeddings(tie):
    model = GPT(GPTConfig(vocab_size=32, block_size=8, n_layer=2, n_head=2, n_embd=16, tie_embeddings=tie))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert all(p.dim() >= 2 for p in decay["params"])
    assert "wte.weight" not in decayed and "wpe.weight" not in decayed
    assert ("lm_head.weight" in decayed) == (not tie)
    assert "blocks.0.attn.qkv.weight" in decayed and "blocks.0.mlp.fc.weight" in decayed
    every = [id(p) for group in (decay, no_decay) for p in group["params"]]
    assert len(every) == len(set(every)) == len(list(model.parameters()))  # each tensor once


# ---- a run end to end -----------------------------------------------------------------------


def test_pretrain_writes_a_complete_run_directory(data, tmp_path):
    run = pretrain(data, tmp_path / "run", overrides={**TINY, "max_iters": 40, "lr": 1e-2}, progress=False)
    config = json.loads((run / "config.json").read_text())
    assert set(config) >= {"model", "train", "data", "stage", "arch"}
    assert config["stage"] == "pretrain" and config["arch"] == "gpt"
    assert config["model"]["vocab_size"] == 64  # the data's 50, padded up to a multiple of 64
    assert config["train"]["max_iters"] == 40 and config["data"]["meta"]["vocab_size"] == 50
    records = read_metrics(run)
    assert [r["step"] for r in records] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert all({"step", "loss", "lr", "tokens_per_sec", "elapsed"} <= set(r) for r in records)
    assert [r["step"] for r in records if "val_loss" in r] == [10, 20, 30, 40]
    assert records[-1]["loss"] < records[0]["loss"] - 0.5  # it learned
    assert (run / "loss.png").stat().st_size > 1000
    assert {p.name for p in (run / "checkpoint").iterdir()} == {"model.safetensors", "trainer.pt", "state.json"}
    model = GPT.from_run(run)
    assert model.config.n_embd == 16


def test_grad_accum_is_the_same_as_a_bigger_batch(data, tmp_path):
    # float32: bf16 (the default on a CPU with native bf16) rounds the two summation orders apart.
    exact = {**TINY, "dtype": "float32"}
    big = pretrain(data, tmp_path / "big", overrides={**exact, "batch_size": 8}, progress=False)
    accum = pretrain(data, tmp_path / "accum", overrides={**exact, "batch_size": 4, "grad_accum": 2}, progress=False)
    # Both draw the same 8 windows from the (seed, step) stream; only the summation order differs.
    for a, b in zip(read_metrics(big), read_metrics(accum)):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)


def test_resume_continues_to_a_longer_max_iters(data, tmp_path):
    run = pretrain(data, tmp_path / "run", overrides=TINY, progress=False)
    pretrain(None, run, overrides={"max_iters": 40}, resume=True, progress=False)
    assert [r["step"] for r in read_metrics(run)][-2:] == [35, 40]
    with pytest.raises(ConfigError, match="fixed"):
        pretrain(None, run, overrides={"n_layer": 3}, resume=True, progress=False)


# ---- bad input ------------------------------------------------------------------------------


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        pretrain(tmp_path / "nowhere", tmp_path / "run", overrides=TINY, progress=False)


def test_data_shorter_than_one_block(tmp_path):
    short = make_data(tmp_path / "short", n_tokens=100)
    with pytest.raises(DataError, match="fewer than one block"):
        pretrain(short, tmp_path / "run", overrides={**TINY, "block_size": 64}, progress=False)


def test_truncated_shard_is_a_data_error(data, tmp_path):
    broken = make_data(tmp_path / "broken")
    with open(broken / "train.bin", "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(DataError, match="prepare the data again"):
        pretrain(broken, tmp_path / "run", overrides=TINY, progress=False)


def test_data_vocab_larger_than_model_vocab(data, tmp_path):
    with pytest.raises(ConfigError, match="50 tokens but the model's vocab_size is 32"):
        pretrain(data, tmp_path / "run", overrides={**TINY, "vocab_size": 32}, progress=False)


def test_unknown_preset_and_key(data, tmp_path):
    with pytest.raises(ConfigError, match="presets"):
        pretrain(data, tmp_path / "run", preset="nope", progress=False)
    with pytest.raises(ConfigError, match="known"):
        pretrain(data, tmp_path / "run", overrides={"n_layers": 2}, progress=False)


def test_existing_run_needs_resume_and_resume_needs_a_run(data, tmp_path):
    run = pretrain(data, tmp_path / "run", overrides=TINY, progress=False)
    with pytest.raises(ConfigError, match="--resume"):
        pretrain(data, run, overrides=TINY, progress=False)
    with pytest.raises(CheckpointError, match="does not exist"):
        pretrain(data, tmp_path / "empty", resume=True, progress=False)


@pytest.mark.parametrize("damage", ["truncate trainer.pt", "garble state.json", "truncate model.safetensors", "delete trainer.pt"])
def test_corrupt_checkpoint_is_a_checkpoint_error(data, tmp_path, damage):
    run = pretrain(data, tmp_path / "run", overrides=TINY, progress=False)
    verb, name = damage.split()
    path = run / "checkpoint" / name
    if verb == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif verb == "garble":
        path.write_text("{not json")
    else:
        path.unlink()
    with pytest.raises(CheckpointError, match="checkpoint|corrupt|does not exist"):
        pretrain(None, run, overrides={"max_iters": 40}, resume=True, progress=False)


def test_a_failed_checkpoint_write_keeps_the_previous_one(data, tmp_path, monkeypatch):
    run = pretrain(data, tmp_path / "run", overrides=TINY, progress=False)
    before = (run / "checkpoint" / "state.json").read_text()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        pretrain(None, run, overrides={"max_iters": 40}, resume=True, progress=False)
    assert (run / "checkpoint" / "state.json").read_text() == before
    monkeypatch.undo()
    pretrain(None, run, overrides={"max_iters": 40}, resume=True, progress=False)  # still resumable
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == 40


def test_a_checkpoint_caught_between_renames_is_found(data, tmp_path):
    run = pretrain(data, tmp_path / "run", overrides=TINY, progress=False)
    os.replace(run / "checkpoint", run / ".checkpoint.old")  # as if killed between the two renames
    pretrain(None, run, overrides={"max_iters": 40}, resume=True, progress=False)
    assert read_metrics(run)[-1]["step"] == 40


# ---- the command line -----------------------------------------------------------------------


def test_cli_pretrain_and_its_errors(data, tmp_path):
    sets = [f"{k}={v}" for k, v in TINY.items()]
    ok = run_cli("pretrain", "--data", str(data), "--out", str(tmp_path / "run"), "--no-progress", "--set", *sets)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert "step 30, loss" in ok.stdout
    bad = run_cli("pretrain", "--out", str(tmp_path / "bad"), "--data", str(data), "--preset", "enormous")
    assert bad.returncode == 1 and "unknown preset" in bad.stderr and "Traceback" not in bad.stderr


def test_auto_precision_on_a_cpu_is_bf16_only_where_it_is_native(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert resolve_dtype(TrainConfig(), cpu) == torch.bfloat16
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert resolve_dtype(TrainConfig(), cpu) == torch.float32
    assert resolve_dtype(TrainConfig(dtype="bfloat16"), cpu) == torch.bfloat16  # asked for: always
