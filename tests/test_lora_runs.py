"""LoRA run directories: `groklm sft --set lora_rank=...` stores only the adapters and a hashed
reference to its base run, loads back as base + adapters wherever a run is loaded, resumes
exactly, and refuses a base that is missing or changed.

The base is a random-init tiny GPT with a character tokenizer (as in test_sft.py): a step takes
milliseconds and nothing needs pretraining."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import groklm
from groklm.cli.main import main
from groklm.errors import CheckpointError, ConfigError
from groklm.interop.hf import export_run
from groklm.model import GPT
from groklm.model.lora import (
    ADAPTERS_FILE,
    apply_lora,
    load_trained_weights,
    lora_layers,
    merge_lora,
)
from groklm.model.weights import save_weights
from groklm.rundir import RunDir
from groklm.runs import load, merge_run
from groklm.tokenizer.char import CharTokenizer
from groklm.train.config import TrainConfig
from groklm.train.dpo import dpo_loss_fn, train_dpo
from groklm.train.preferences import collate, encode_pairs
from groklm.train.reward import RewardModel, train_reward
from groklm.train.sft import sft
from groklm.train.stage import stage_process

from helpers.preferences import CHARS as CHARS_PREF
from helpers.preferences import FAST as FAST_PREF
from helpers.preferences import easy_pairs
from helpers.runs import lora_policy, read_metrics, tiny_run
from helpers.training import sum_chats

transformers = pytest.importorskip("transformers")

CHARS = "abcdefghijklmnopqrstuvwxyz0123456789+=?!., \n"
FAST = {"max_iters": 6, "batch_size": 4, "eval_interval": 3, "eval_iters": 2, "log_interval": 1,
        "warmup_iters": 2, "device": "cpu"}
LORA = {"lora_rank": 2, "lora_alpha": 8, "lora_targets": "attn,mlp"}


def make_base(path: Path) -> Path:
    return tiny_run(path, CHARS, block_size=80, n_layer=2, n_embd=64, pos="rope", norm="rmsnorm", mlp="swiglu")


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def safetensors_bytes(run: Path) -> int:
    return sum(path.stat().st_size for path in run.rglob("*.safetensors"))


def test_lora_sft_stores_only_adapters_and_loads_as_base_plus_adapters(tmp_path):
    base = make_base(tmp_path / "base")
    over = {**FAST, **LORA, "max_iters": 30, "eval_interval": 15, "lr": 1e-2, "warmup_iters": 3, "log_interval": 5}
    run = sft(base, sum_chats(100), tmp_path / "lora", overrides=over, progress=False)

    # Only adapters, in the run and in its checkpoint: no copy of the base anywhere.
    assert (run / ADAPTERS_FILE).is_file() and (run / "checkpoint" / ADAPTERS_FILE).is_file()
    assert not list(run.rglob("model.safetensors"))
    print(f"LoRA run safetensors: {safetensors_bytes(run):,} bytes; base: {safetensors_bytes(base):,}")
    assert safetensors_bytes(run) < safetensors_bytes(base) / 4
    config = json.loads((run / "config.json").read_text())
    assert config["lora"]["base"] == str(base.resolve()) and len(config["lora"]["base_sha256"]) == 64
    assert {k: config["lora"][k] for k in ("rank", "alpha", "dropout", "targets")} == \
        {"rank": 2, "alpha": 8.0, "dropout": 0.0, "targets": "attn,mlp"}
    records = read_metrics(run)
    assert records[-1]["loss"] < records[0]["loss"]  # the adapters learn

    # Loading: the base's weights plus the adapters, the same function as wrapping by hand.
    model, _ = load(run, merge_adapters=False)
    assert len(lora_layers(model)) == 2 * 5
    by_hand = GPT.from_run(base)
    apply_lora(by_hand, rank=2, alpha=8, targets="attn,mlp")
    load_trained_weights(by_hand, run)
    ids = torch.randint(0, model.config.vocab_size, (2, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(ids)[0]
        assert torch.equal(logits, by_hand(ids)[0])
        assert (logits - GPT.from_run(base)(ids)[0]).abs().max() > 1e-3  # training moved the adapters
        plain, _ = groklm.load(run)  # by default the adapters are folded in at load
        assert not lora_layers(plain) and (plain(ids)[0] - logits).abs().max() < 1e-5
        merged = merge_lora(model)(ids)[0]
    assert (merged - logits).abs().max() < 1e-5

    # Exporting reads the weights the model computes with: base + adapters, not the base alone.
    export_run(run, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        assert (hf(ids).logits - logits).abs().max() < 1e-4
    with pytest.raises(CheckpointError, match="is a LoRA run.*groklm.load"):
        GPT.from_run(run)  # the plain GPT loader cannot add adapters, and says where to go


def test_resumed_lora_sft_matches_an_uninterrupted_run(tmp_path):
    base = make_base(tmp_path / "base")
    data = write_jsonl(tmp_path / "chats.jsonl", sum_chats(60))
    over = {**FAST, **LORA, "max_iters": 12, "eval_interval": 6, "lr_decay_iters": 12, "lora_dropout": 0.1}
    straight = read_metrics(sft(base, data, tmp_path / "straight", overrides=over, progress=False))
    part = tmp_path / "part"
    sft(base, data, part, overrides={**over, "max_iters": 6}, progress=False)
    resumed = read_metrics(sft(None, None, part, overrides={"max_iters": 12}, resume=True, progress=False))
    drop = ("elapsed", "tokens_per_sec")
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed] == \
        [{k: v for k, v in r.items() if k not in drop} for r in straight]

    with pytest.raises(ConfigError, match="keeps them"):
        sft(None, None, part, overrides={"max_iters": 14, "lora_rank": 4}, resume=True, progress=False)


def test_a_missing_or_changed_base_is_refused(tmp_path):
    base = make_base(tmp_path / "base")
    data = write_jsonl(tmp_path / "chats.jsonl", sum_chats(20))
    run = sft(base, data, tmp_path / "lora", overrides={**FAST, **LORA, "max_iters": 3}, progress=False)
    original = (base / "model.safetensors").read_bytes()

    changed = GPT.from_run(base)
    with torch.no_grad():
        changed.wte.weight.add_(0.01)
    save_weights(changed, base / "model.safetensors")
    with pytest.raises(CheckpointError, match="has changed since.*Restore the original base run"):
        groklm.load(run)
    with pytest.raises(CheckpointError, match="has changed since"):  # resuming would train on the wrong base
        sft(None, None, run, overrides={"max_iters": 6}, resume=True, progress=False)

    (base / "model.safetensors").write_bytes(original)
    groklm.load(run)  # the same bytes again: fine
    base.rename(tmp_path / "moved")
    with pytest.raises(CheckpointError, match="which is missing.*Put the base run back"):
        groklm.load(run)


def test_bad_lora_settings_write_nothing(tmp_path):
    base = tiny_run(tmp_path / "base", CHARS, block_size=80, n_embd=32)  # GPT-2 shaped: no gate
    with pytest.raises(ConfigError, match="'gate' matches no linear layer"):
        sft(base, sum_chats(20), tmp_path / "a", overrides={**FAST, "lora_rank": 2, "lora_targets": "gate"}, progress=False)
    assert not (tmp_path / "a").exists()
    with pytest.raises(ConfigError, match="lora_rank=64 is larger than"):
        sft(base, sum_chats(20), tmp_path / "b", overrides={**FAST, "lora_rank": 64}, progress=False)
    assert not (tmp_path / "b").exists()
    with pytest.raises(ConfigError, match="lora_rank must be 0"):
        sft(base, sum_chats(20), tmp_path / "c", overrides={**FAST, "lora_rank": -1}, progress=False)

    run = sft(base, sum_chats(20), tmp_path / "lora", overrides={**FAST, "lora_rank": 2, "max_iters": 2}, progress=False)
    with pytest.raises(CheckpointError, match="is a LoRA run.*merge it first"):
        sft(run, sum_chats(20), tmp_path / "d", overrides=FAST, progress=False)
    assert not (tmp_path / "d").exists()


def test_stages_without_lora_refuse_it_instead_of_training_every_weight(tmp_path):
    config = {"stage": "pretrain", "parent": None, "arch": "gpt", "model": {}, "train": {}, "data": {}}
    with pytest.raises(ConfigError, match="pretrain stage does not train LoRA adapters yet"):
        with stage_process(RunDir(tmp_path / "run"), config, TrainConfig(lora_rank=4, device="cpu"), resume=False):
            pass
    assert not (tmp_path / "run").exists()


# ---- the command line: sft with --set lora_*, then merge --------------------------------------


def test_cli_lora_sft_then_merge_gives_a_plain_run_with_the_same_logits(tmp_path, capsys):
    base = make_base(tmp_path / "base")
    data = write_jsonl(tmp_path / "chats.jsonl", sum_chats(30))
    sets = [f"{k}={v}" for k, v in {**FAST, "max_iters": 4, "lr": 1e-2}.items()]
    run, merged = tmp_path / "lora", tmp_path / "merged"
    main(["sft", str(base), "--data", str(data), "--out", str(run), "--no-progress",
          "--set", *sets, "lora_rank=4", "lora_alpha=16", "lora_targets=q,v,down"])
    assert json.loads((run / "config.json").read_text())["lora"]["targets"] == "q,v,down"
    lora_model, _ = load(run, merge_adapters=False)
    assert {name.rsplit(".", 2)[-2] for name in lora_layers(lora_model)} == {"attn", "mlp"}

    main(["merge", str(run), "--out", str(merged)])
    assert "merged the adapters" in capsys.readouterr().err
    assert sorted(p.name for p in merged.iterdir()) == ["config.json", "model.safetensors", "tokenizer"]
    config = json.loads((merged / "config.json").read_text())
    assert config["stage"] == "merge" and config["parent"] == str(run.resolve()) and "lora" not in config
    base.rename(tmp_path / "moved")  # a merged run needs neither its base nor the LoRA run
    model, tokenizer = groklm.load(merged)
    assert not lora_layers(model) and isinstance(GPT.from_run(merged), GPT)
    ids = torch.randint(0, model.config.vocab_size, (2, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model(ids)[0] - lora_model(ids)[0]).abs().max() < 1e-5


def test_merge_refuses_plain_runs_and_used_directories(tmp_path):
    base = make_base(tmp_path / "base")
    with pytest.raises(ConfigError, match="no LoRA adapters to merge"):
        merge_run(base, tmp_path / "out")
    run = sft(base, sum_chats(20), tmp_path / "lora", overrides={**FAST, **LORA, "max_iters": 2}, progress=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        merge_run(run, base)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        merge_run(run, tmp_path / "busy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "busy", "lora"]  # no staging folder left


# ---- DPO with LoRA: the reference is the base with the adapters off ---------------------------


def test_lora_dpo_reference_is_the_base_with_adapters_off(base):
    tokenizer = CharTokenizer(CHARS_PREF)
    ids, response, lengths = collate(encode_pairs(tokenizer, easy_pairs(8, seed=3), 64))
    policy = lora_policy(base)
    one_copy, _ = dpo_loss_fn(None, 0.5, "sigmoid", 0.0)(policy, (ids, response, lengths))
    two_copies, _ = dpo_loss_fn(GPT.from_run(base), 0.5, "sigmoid", 0.0)(policy, (ids, response, lengths))
    assert abs(one_copy.item() - 0.6931472) > 1e-3  # the adapters make the policy differ from its reference
    assert torch.allclose(one_copy, two_copies, atol=1e-6)
    assert policy.training and all(layer.enabled for layer in lora_layers(policy).values())


def test_lora_dpo_separates_chosen_from_rejected_and_resumes(base, pair_files, tmp_path):
    train_file, test_file = pair_files
    lora = {"lora_rank": 4, "lora_alpha": 16, "lr": 1e-2, "min_lr": 1e-3}
    out = train_dpo(base, str(train_file), tmp_path / "dpo", val=str(test_file), beta=0.5,
                    overrides={**FAST_PREF, **lora, "max_iters": 40, "log_interval": 1}, progress=False)
    records = read_metrics(out)
    assert records[0]["rewards/margins"] == 0.0 and records[0]["loss"] == pytest.approx(0.6931472)
    print(f"LoRA DPO: val accuracy {records[-1]['val_accuracy']:.2f}, margin {records[-1]['val_rewards/margins']:.2f}")
    assert records[-1]["val_rewards/margins"] > 0.5 and records[-1]["val_accuracy"] > 0.8
    assert (out / ADAPTERS_FILE).is_file() and not list(out.rglob("model.safetensors"))

    settings = {**FAST_PREF, **lora, "eval_interval": 3, "lr_decay_iters": 6, "warmup_iters": 2}
    straight = train_dpo(base, str(train_file), tmp_path / "straight", overrides={**settings, "max_iters": 6},
                         progress=False)
    cut = train_dpo(base, str(train_file), tmp_path / "cut", overrides={**settings, "max_iters": 3}, progress=False)
    train_dpo(None, None, cut, overrides={"max_iters": 6}, resume=True, progress=False)
    drop = ("elapsed", "tokens_per_sec")
    assert [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(cut)] == \
        [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(straight)]
    with pytest.raises(CheckpointError, match="is a LoRA run.*merge it first"):
        train_dpo(out, str(train_file), tmp_path / "again", overrides=FAST_PREF, progress=False)


# ---- reward models with LoRA: adapters on the backbone, the head trained in full -------------


def test_lora_reward_model_stores_adapters_and_head_learns_and_resumes(base, pair_files, tmp_path):
    train_file, test_file = pair_files
    lora = {"lora_rank": 4, "lora_alpha": 16, "lr": 1e-2, "min_lr": 1e-3}
    out = train_reward(base, str(train_file), tmp_path / "rm", val=str(test_file),
                       overrides={**FAST_PREF, **lora, "max_iters": 40}, progress=False)
    last = read_metrics(out)[-1]
    print(f"LoRA reward model: val accuracy {last['val_accuracy']:.2f}")
    assert last["val_accuracy"] > 0.8
    saved = load_file(out / ADAPTERS_FILE)
    assert "head.weight" in saved and all(name.startswith("head.") or ".lora_" in name for name in saved)
    assert not list(out.rglob("model.safetensors"))

    # RewardModel.from_run (what PPO's reward and the evals load) adds base, adapters and head.
    model = RewardModel.from_run(out)
    assert len(lora_layers(model)) == 2 * 4  # GPT-2 shaped backbone: qkv, proj, fc, proj
    assert torch.equal(model.head.weight, saved["head.weight"])
    tokenizer = CharTokenizer(CHARS_PREF)
    ids, _, lengths = collate(encode_pairs(tokenizer, easy_pairs(32, seed=5), 64))
    with torch.no_grad():
        chosen, rejected = model(ids, lengths).chunk(2)
    assert (chosen > rejected).float().mean() > 0.8

    settings = {**FAST_PREF, **lora, "eval_interval": 3, "lr_decay_iters": 6, "warmup_iters": 2}
    straight = train_reward(base, str(train_file), tmp_path / "straight", overrides={**settings, "max_iters": 6},
                            progress=False)
    cut = train_reward(base, str(train_file), tmp_path / "cut", overrides={**settings, "max_iters": 3}, progress=False)
    train_reward(None, None, cut, overrides={"max_iters": 6}, resume=True, progress=False)
    assert load_file(cut / ADAPTERS_FILE).keys() == load_file(straight / ADAPTERS_FILE).keys()
    assert all(torch.equal(load_file(cut / ADAPTERS_FILE)[k], t) for k, t in load_file(straight / ADAPTERS_FILE).items())
