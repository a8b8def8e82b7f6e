"""The run directory contract: one config.json schema for every stage, one refusal to overwrite
a run, and run directories written before the schema still loading (and resuming)."""

from __future__ import annotations

import json

import pytest

import groklm
from groklm.errors import ConfigError
from groklm.model import GPT
from groklm.rundir import RunDir, normalise_config, read_config
from groklm.train.pretrain import pretrain
from groklm.train.rl.ppo import train_ppo
from groklm.train.sft import sft

from helpers.runs import read_metrics, tiny_run
from helpers.training import TINY, make_data

PROMPT = [{"role": "user", "content": "hi"}]


def rewrite_config(run, change) -> None:
    """Give a run's config.json the shape an older groklm wrote."""
    path = run / "config.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


# ---- the schema -----------------------------------------------------------------------------


def test_write_config_has_one_schema(tmp_path):
    run = RunDir(tmp_path / "run")
    written = run.write_config("dpo", parent=tmp_path / "base", arch="gpt", model={"n_layer": 1}, train={"lr": 1.0},
                               data={"spec": "synthetic"}, dpo={"beta": 0.1})
    assert written == {"stage": "dpo", "parent": str((tmp_path / "base").resolve()), "arch": "gpt",
                       "model": {"n_layer": 1}, "train": {"lr": 1.0}, "data": {"spec": "synthetic"}, "dpo": {"beta": 0.1}}
    assert read_config(run.path) == written  # a config of today's shape reads back unchanged
    with pytest.raises(ValueError, match="unknown stage"):
        run.write_config("finetune", parent=None, arch="gpt", model={}, train=None, data=None)


def test_check_fresh_refuses_a_run_or_a_checkpoint(tmp_path):
    run = RunDir(tmp_path / "run")
    run.check_fresh()  # nothing there yet
    (run.path / "checkpoint").mkdir(parents=True)
    with pytest.raises(ConfigError, match="already holds a run; pass --resume to continue it, or choose another --out"):
        run.check_fresh()
    with pytest.raises(ConfigError, match="already holds a run; pass --force"):
        run.check_fresh(remedy="pass --force to replace it")


def test_copy_tokenizer_takes_a_folder_or_one_file(tmp_path):
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "vocab.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    a, b = RunDir(tmp_path / "a"), RunDir(tmp_path / "b")
    a.copy_tokenizer(folder)
    b.copy_tokenizer(tmp_path / "tokenizer.json")
    assert (a.tokenizer_dir / "vocab.json").is_file() and (b.tokenizer_dir / "tokenizer.json").is_file()


@pytest.mark.parametrize("old, new", [
    ({"model": {}, "stage": "sft", "arch": "gpt", "base_run": "/b", "data": {"train": "x"}},
     {"model": {}, "stage": "sft", "arch": "gpt", "parent": "/b", "data": {"train": "x"}}),
    ({"model": {}, "stage": "reward", "arch": "reward", "base_run": "/b", "reward": {"margin": 0.1}},
     {"model": {}, "stage": "reward", "arch": "reward", "parent": "/b", "reward": {"margin": 0.1}}),
    ({"model": {}, "stage": "ppo", "arch": "gpt", "source": "/s", "reward": "verifier", "prompts": "synthetic", "rl": {}},
     {"model": {}, "stage": "ppo", "arch": "gpt", "parent": "/s", "rl": {},
      "data": {"reward": "verifier", "prompts": "synthetic"}}),
    ({"model": {}, "stage": "import", "arch": "gpt", "source": {"format": "hf", "path": "/hf", "model_type": "gpt2"}},
     {"model": {}, "stage": "import", "arch": "gpt", "parent": None,
      "import": {"format": "hf", "path": "/hf", "model_type": "gpt2"}}),
    ({"model": {}, "stage": "pretrain", "arch": "lstm", "preset": "tiny", "data": {"dir": "/d"}},
     {"model": {}, "stage": "pretrain", "arch": "lstm", "parent": None, "pretrain": {"preset": "tiny"}, "data": {"dir": "/d"}}),
    ({"model": {}, "stage": "seq2seq", "arch": "seq2seq", "task": {"task": "reverse"}},
     {"model": {}, "stage": "seq2seq", "arch": "seq2seq", "parent": None, "data": {"task": {"task": "reverse"}}}),
    ({"model": {}, "stage": "distill", "arch": "encoder-classifier", "student": "scratch", "labels": ["a", "b"],
      "max_length": 64, "teacher": "local:x", "instructions": None, "data": {"texts": 2}},
     {"model": {}, "stage": "distill", "arch": "encoder-classifier", "parent": None, "data": {"texts": 2},
      "distill": {"student": "scratch", "labels": ["a", "b"], "max_length": 64, "teacher": "local:x", "instructions": None}}),
    ({"model": {}}, {"model": {}, "parent": None, "arch": "gpt"}),  # the very first runs: a model, nothing else
])
def test_old_configs_read_in_the_one_schema(old, new):
    assert normalise_config(old) == new


# ---- old run directories, for real -----------------------------------------------------------


def test_an_old_pretraining_run_resumes(tmp_path):
    data = make_data(tmp_path / "data")
    run = TINY | {"max_iters": 20, "eval_interval": 10, "lr_decay_iters": 20}  # a schedule that ignores where part 1 stops
    straight = read_metrics(pretrain(data, tmp_path / "straight", overrides=run, progress=False))
    pretrain(data, tmp_path / "old", overrides={**run, "max_iters": 10}, progress=False)

    def old(config):  # no parent, the preset at the top level
        del config["parent"]
        config["preset"] = config.pop("pretrain")["preset"]
        return config

    rewrite_config(tmp_path / "old", old)
    resumed = read_metrics(pretrain(None, tmp_path / "old", overrides={"max_iters": 20}, resume=True, progress=False))
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in straight], abs=1e-6)
    assert read_config(tmp_path / "old")["pretrain"] == {"preset": None}  # rewritten in today's shape


def test_an_old_sft_run_loads_and_resumes(tmp_path):
    base = tiny_run(tmp_path / "base", block_size=128)
    chats = [{"messages": [{"role": "user", "content": f"say {i}"}, {"role": "assistant", "content": str(i)}]}
             for i in range(20)]
    over = {"max_iters": 4, "eval_interval": 2, "batch_size": 2, "eval_iters": 1, "device": "cpu"}
    run = sft(base, chats, tmp_path / "sft", overrides=over, progress=False)
    rewrite_config(run, lambda config: {**{k: v for k, v in config.items() if k != "parent"}, "base_run": config["parent"]})
    model, _ = groklm.load(run)
    assert isinstance(model, GPT) and read_config(run)["parent"] == str(base.resolve())
    sft(None, chats, run, overrides={"max_iters": 6}, resume=True, progress=False)
    assert [r["step"] for r in read_metrics(run)][-1] == 6


def test_an_old_rl_run_resumes(tmp_path):
    source = tiny_run(tmp_path / "sft", "abcdehimnorstuy\n ", stage="sft")
    score = lambda records, texts: [float(t.startswith("a")) for t in texts]  # noqa: E731
    over = {"max_iters": 2, "eval_interval": 1, "prompts_per_step": 2, "batch_size": 2, "max_new_tokens": 2,
            "device": "cpu"}
    run = train_ppo(source, tmp_path / "rl", reward=score, prompts=[{"prompt": PROMPT}], overrides=over, progress=False)

    def old(config):  # PPO once named its parent "source", and kept reward and prompts at the top level
        config["source"] = config.pop("parent")
        config.update(config.pop("data"))
        return config

    rewrite_config(run, old)
    train_ppo(None, run, reward=score, prompts=[{"prompt": PROMPT}], overrides={"max_iters": 3}, resume=True,
              progress=False)
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]
    assert isinstance(GPT.from_run(run), GPT)  # still a plain GPT run
