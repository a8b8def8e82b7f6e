"""LoRA on the stages outside the chat/preference scaffold: continued pretraining
(`groklm pretrain --init-from RUN --set lora_rank=...`) and RL (ppo, grpo).

Each writes a LoRA run directory as sft does (tests/test_lora_runs.py): only the adapters plus
a hashed reference to the run it started from, loading through runs.load as base + adapters,
resuming exactly. RL's reference policy is the base with its adapters off, and ppo's value head
trains in full beside them (kept in the checkpoint, not in the run).

The base is a random-init tiny GPT with a character tokenizer: a step takes milliseconds."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from groklm.cli.main import main
from groklm.data.prepare import prepare
from groklm.errors import CheckpointError, ConfigError
from groklm.model import GPT
from groklm.model.lora import ADAPTERS_FILE, lora_layers
from groklm.rundir import TOKENIZER_DIR
from groklm.runs import load
from groklm.train.pretrain import pretrain
from groklm.train.rl.ppo import train_ppo

from helpers.runs import read_metrics, tiny_run

# The chat headers' letters (as in test_ppo.py), so the same base can render chats for RL.
CHARS = "abcdehimnorstuy\n "
WORDS = ["the", "cat", "sat", "on", "mat", "a", "dish", "is", "hot", "red", "sun", "day", "most", "home", "tiny"]
LORA = {"lora_rank": 2, "lora_alpha": 8, "lora_targets": "attn,mlp"}
PRETRAIN = {"max_iters": 12, "batch_size": 4, "eval_interval": 6, "eval_iters": 2, "log_interval": 1,
            "warmup_iters": 2, "lr": 1e-2, "min_lr": 1e-3, "device": "cpu"}
RL = {"max_iters": 4, "lr": 1e-2, "min_lr": 1e-2, "batch_size": 8, "max_new_tokens": 3, "prompts_per_step": 8,
      "ppo_epochs": 2, "eval_interval": 2, "device": "cpu"}
PROMPT = [{"role": "user", "content": "hi"}]
NOT_TIMED = ("elapsed", "tokens_per_sec")


def starts_with_a(records, texts):
    return [1.0 if t.startswith("a") else 0.0 for t in texts]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("base") / "run", CHARS, n_layer=2, n_embd=32, pos="rope", norm="rmsnorm",
                    mlp="swiglu")


def prepare_text(folder: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A data directory of random sentences of WORDS, encoded with the tokenizer at tokenizer_dir."""
    rng = random.Random(seed)
    text = "".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))) + "\n" for _ in range(300))
    source = folder.with_suffix(".txt")
    source.write_text(text)
    prepare([str(source)], str(tokenizer_dir), folder, val_fraction=0.1, progress=False)
    return folder


@pytest.fixture(scope="module")
def data(base, tmp_path_factory) -> Path:
    return prepare_text(tmp_path_factory.mktemp("data") / "text", base / TOKENIZER_DIR)


def safetensors_bytes(run: Path) -> int:
    return sum(path.stat().st_size for path in run.rglob("*.safetensors"))


def logits_of(model, seed: int = 0) -> torch.Tensor:
    ids = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(ids)[0]


def comparable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in NOT_TIMED} for r in records]


# ---- continued pretraining --------------------------------------------------------------------


def test_continued_pretraining_starts_from_the_runs_weights(base, data, tmp_path):
    # A learning rate of zero changes nothing: the new run holds exactly the weights it started from.
    run = pretrain(data, tmp_path / "cont", overrides={**PRETRAIN, "max_iters": 2, "lr": 0.0, "min_lr": 0.0},
                   progress=False, init_from=base)
    config = json.loads((run / "config.json").read_text())
    assert config["parent"] == str(base.resolve()) and "lora" not in config
    assert config["model"] == json.loads((base / "config.json").read_text())["model"]
    assert all(torch.equal(a, b) for a, b in zip(GPT.from_run(run).state_dict().values(),
                                                   GPT.from_run(base).state_dict().values()))


def test_lora_continued_pretraining_stores_only_adapters_and_loads_as_base_plus_adapters(base, data, tmp_path):
    run = pretrain(data, tmp_path / "lora", overrides={**PRETRAIN, **LORA, "max_iters": 30, "eval_interval": 15},
                   progress=False, init_from=base)

    assert (run / ADAPTERS_FILE).is_file() and (run / "checkpoint" / ADAPTERS_FILE).is_file()
    assert not list(run.rglob("model.safetensors"))
    assert safetensors_bytes(run) < safetensors_bytes(base) / 4
    config = json.loads((run / "config.json").read_text())
    assert config["lora"]["base"] == str(base.resolve()) and len(config["lora"]["base_sha256"]) == 64
    records = read_metrics(run)
    assert records[-1]["loss"] < records[0]["loss"]  # the adapters learn the text

    model, _ = load(run, merge_adapters=False)
    assert len(lora_layers(model)) == 2 * 5  # qkv, proj, fc, gate, proj in each of 2 blocks
    assert (logits_of(model) - logits_of(GPT.from_run(base))).abs().max() > 1e-3
    merged, _ = load(run)
    assert not lora_layers(merged) and (logits_of(merged) - logits_of(model)).abs().max() < 1e-5


def test_resumed_lora_continued_pretraining_matches_an_uninterrupted_run(base, data, tmp_path):
    over = {**PRETRAIN, **LORA, "lora_dropout": 0.1, "lr_decay_iters": 12}
    straight = read_metrics(pretrain(data, tmp_path / "straight", overrides=over, progress=False, init_from=base))
    part = pretrain(data, tmp_path / "part", overrides={**over, "max_iters": 6}, progress=False, init_from=base)
    resumed = read_metrics(pretrain(None, part, overrides={"max_iters": 12}, resume=True, progress=False))
    assert comparable(resumed) == comparable(straight)

    with pytest.raises(ConfigError, match="keeps them"):
        pretrain(None, part, overrides={"max_iters": 14, "lora_rank": 4}, resume=True, progress=False)
    with pytest.raises(ConfigError, match="without --init-from"):
        pretrain(None, part, overrides={"max_iters": 14}, resume=True, progress=False, init_from=base)


def test_continued_pretraining_refuses_bad_input_and_writes_nothing(base, data, tmp_path):
    # As many characters, but "g" for "b" (which WORDS never use) moves the ids of c, d and e.
    other_tokenizer = tiny_run(tmp_path / "other", CHARS.replace("b", "g")) / TOKENIZER_DIR
    cases = [
        (ConfigError, "add --init-from RUN", dict(overrides={**PRETRAIN, **LORA})),
        (ConfigError, "another tokenizer", dict(data_dir=prepare_text(tmp_path / "foreign", other_tokenizer),
                                                init_from=base)),
        (ConfigError, "leave out --preset", dict(preset="tiny", init_from=base)),
        (ConfigError, r"cannot change \['n_layer'\]", dict(overrides={"n_layer": 3}, init_from=base)),
        (ConfigError, "lora_rank=9 is larger", dict(overrides={**PRETRAIN, "lora_rank": 9, "lora_targets": "k"},
                                                    init_from=tiny_run(tmp_path / "narrow", CHARS, n_head=4, n_kv_head=1,
                                                                       n_embd=32))),  # k: 8 rows
        (CheckpointError, "does not exist", dict(init_from=tmp_path / "missing")),
    ]
    for number, (error, message, kwargs) in enumerate(cases):
        out = tmp_path / f"out{number}"
        with pytest.raises(error, match=message):
            pretrain(**{"data_dir": data, "out_dir": out, "progress": False, **kwargs})
        assert not out.exists(), message


def test_lora_run_as_init_from_must_be_merged_first(base, data, tmp_path):
    lora = pretrain(data, tmp_path / "lora", overrides={**PRETRAIN, **LORA, "max_iters": 1}, progress=False,
                    init_from=base)
    with pytest.raises(CheckpointError, match="is a LoRA run.*merge it first"):
        pretrain(data, tmp_path / "again", overrides=PRETRAIN, progress=False, init_from=lora)
    assert not (tmp_path / "again").exists()


def test_pretrain_command_with_init_from_and_lora(base, data, tmp_path, capsys):
    out = tmp_path / "cli"
    main(["pretrain", "--init-from", str(base), "--data", str(data), "--out", str(out), "--no-progress", "--set",
          "max_iters=2", "batch_size=2", "eval_iters=1", "device=cpu", "lora_rank=2", "lora_targets=q,v"])
    assert f"{out}: step 2" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["lora"]["targets"] == "q,v"
    model, _ = load(out, merge_adapters=False)
    assert sorted({part for layer in lora_layers(model).values() for part in layer.lora_A}) == ["q", "v"]


# ---- ppo and grpo -----------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_lora_rl_trains_adapters_against_the_base_with_adapters_off(base, tmp_path, algo):
    run = train_ppo(base, tmp_path / algo, reward=starts_with_a, prompts=[{"prompt": PROMPT}] * 8, algo=algo,
                    overrides={**RL, **LORA}, progress=False)
    records = read_metrics(run)
    # The adapters' B starts at zero, so the first rollout's policy IS the reference (the base
    # with the adapters off): their log-probs agree exactly, and the KL is exactly zero.
    assert records[0]["kl"] == 0.0 and records[-1]["kl"] != 0.0

    # The run: only the policy's adapters; the checkpoint: the adapters and (ppo) the value head.
    assert not list(run.rglob("model.safetensors"))
    assert safetensors_bytes(run) < safetensors_bytes(base) / 4
    assert not [k for k in load_file(run / ADAPTERS_FILE) if not (".lora_A." in k or ".lora_B." in k)]
    extras = sorted(k for k in load_file(run / "checkpoint" / ADAPTERS_FILE) if ".lora_" not in k)
    assert extras == (["value_head.bias", "value_head.weight"] if algo == "ppo" else [])
    config = json.loads((run / "config.json").read_text())
    assert config["stage"] == algo and config["lora"]["base"] == str(base.resolve())

    model, _ = load(run, merge_adapters=False)
    assert lora_layers(model)
    assert (logits_of(model) - logits_of(GPT.from_run(base))).abs().max() > 1e-4  # the adapters moved


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_resumed_lora_rl_matches_an_uninterrupted_run(base, tmp_path, algo):
    kwargs = dict(reward=starts_with_a, prompts=[{"prompt": PROMPT}] * 8, algo=algo, progress=False)
    over = {**RL, **LORA}
    whole = train_ppo(base, tmp_path / "whole", overrides=over, **kwargs)
    train_ppo(base, tmp_path / "part", overrides={**over, "max_iters": 2}, **kwargs)
    part = train_ppo(None, tmp_path / "part", overrides={"max_iters": 4}, resume=True, **kwargs)
    assert comparable(read_metrics(part)) == comparable(read_metrics(whole))
    a, b = load_file(whole / ADAPTERS_FILE), load_file(part / ADAPTERS_FILE)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
