"""KTO: the loss against TRL's KTOTrainer, the mismatched rows of the KL estimate, the data
formats (unpaired examples, preference pairs), a short run that moves desirable and undesirable
replies apart, resume, the CLI, and the clear errors (one label only, bad settings). The tiny
run and the pairs are the DPO tests' (the `base` and `pair_files` fixtures in conftest.py)."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from groklm.errors import ConfigError, DataError
from groklm.model import GPT
from groklm.model.lora import ADAPTERS_FILE, lora_layers
from groklm.tokenizer.char import CharTokenizer
from groklm.train.kto import (
    collate_examples,
    encode_examples,
    kl_estimate,
    kto_loss,
    kto_loss_fn,
    pairs_to_examples,
    read_examples,
    train_kto,
)
from groklm.train.preferences import encode_reply, sequence_logps

from helpers.preferences import CHARS, FAST, easy_pairs
from helpers.runs import lora_policy, read_metrics


def write_examples(path, examples: list[dict]):
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return path


def unpaired(n: int, seed: int = 0) -> list[dict]:
    """KTO examples from easy pairs with one side of each pair dropped at random: no prompt has both."""
    rng = random.Random(seed)
    examples = []
    for pair in easy_pairs(n, seed):
        label = rng.random() < 0.5
        examples.append({"prompt": pair["prompt"], "completion": pair["chosen" if label else "rejected"], "label": label})
    return examples


# ---- the loss, against TRL ----------------------------------------------------------------


def trl_kto_loss(per_token, kl_per_token, mask, kl_mask, ref, ref_kl, labels, beta, desirable_weight, undesirable_weight):
    """TRL's KTOTrainer._compute_loss on given per-token log-probs of the matched and the
    mismatched (KL) rows, with a stub trainer and a stub model returning those log-probs, and
    the reference's summed log-probs given as precomputed; returns (loss, metrics)."""
    trl = pytest.importorskip("trl.trainer.kto_trainer")
    n, T = per_token.size(0), per_token.size(1) + 1  # per_token[:, t] predicts token t + 1
    ids, kl_ids = torch.zeros(n, T, dtype=torch.long), torch.ones(n, T, dtype=torch.long)
    stub = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=SimpleNamespace(device="cpu", gather_for_metrics=lambda x: x),
        aux_loss_enabled=False, precompute_ref_logps=True, calculate_KL=True, loss_type="kto", beta=beta,
        desirable_weight=desirable_weight, undesirable_weight=undesirable_weight,
        _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1)
    stub._compute_kl_logps = lambda model, batch: trl.KTOTrainer._compute_kl_logps(stub, model, batch)

    def outputs(log_probs):
        return SimpleNamespace(log_probs=log_probs, entropy=torch.zeros(n, T - 1), mean_logits=torch.zeros(n, T - 1))

    def model(**kwargs):  # TRL masks with its labels; the stub returns the masked log-probs directly
        return outputs(kl_per_token * kl_mask[:, 1:]) if kwargs["input_ids"] is kl_ids else outputs(per_token * mask[:, 1:])

    inputs = {"input_ids": ids, "attention_mask": torch.ones(n, T, dtype=torch.long), "completion_mask": mask.long(),
              "KL_input_ids": kl_ids, "KL_attention_mask": torch.ones(n, T, dtype=torch.long),
              "KL_completion_mask": kl_mask.long(), "label": labels, "ref_logps": ref, "ref_KL_logps": ref_kl}
    loss = trl.KTOTrainer._compute_loss(stub, model, inputs, False)
    return loss, {k: v[0] for k, v in stub._metrics["train"].items()}


def random_mask(n: int, T: int, gen: torch.Generator) -> torch.Tensor:
    mask = torch.zeros(n, T, dtype=torch.bool)
    for r in range(n):
        start = int(torch.randint(2, T - 2, (1,), generator=gen))
        mask[r, start : start + int(torch.randint(1, T - start, (1,), generator=gen))] = True
    return mask


@pytest.mark.parametrize("kl_shift, weights", [(0.8, (1.0, 1.0)), (0.8, (1.0, 1.7)), (-0.8, (1.3, 1.0))])
def test_kto_loss_equals_trl(kl_shift, weights):
    """Same log-probabilities in, same loss, KL estimate and rewards out. kl_shift moves the
    mismatched rows' policy log-probs above (a positive KL, which enters the loss) or below (a
    negative mean, clamped to 0) the reference's; unequal weights catch the labels swapped."""
    gen = torch.Generator().manual_seed(0)
    n, T, beta = 10, 12, 0.3
    per_token, kl_per_token = -torch.rand(n, T - 1, generator=gen) * 3, -torch.rand(n, T - 1, generator=gen) * 3
    mask, kl_mask = random_mask(n, T, gen), random_mask(n, T, gen)
    labels = torch.tensor([True, False, False, True, True, False, True, False, False, False])
    policy, policy_kl = (per_token * mask[:, 1:]).sum(1), (kl_per_token * kl_mask[:, 1:]).sum(1)
    ref = policy + torch.randn(n, generator=gen) * 2
    ref_kl = policy_kl - kl_shift + torch.randn(n, generator=gen) * 0.1
    kl = kl_estimate(policy_kl, ref_kl)
    assert (kl > 0) == (kl_shift > 0)
    losses, rewards = kto_loss(policy, ref, labels, kl, beta, *weights)
    trl_loss, metrics = trl_kto_loss(per_token, kl_per_token, mask, kl_mask, ref, ref_kl, labels, beta, *weights)
    print(f"|ours - TRL|: {abs(trl_loss.item() - losses.mean().item()):.2e}, kl {kl.item():.3f}")
    assert losses.mean().item() == pytest.approx(trl_loss.item(), abs=1e-6)
    assert metrics["kl"] == pytest.approx(kl.item(), abs=1e-6)
    assert metrics["rewards/chosen"] == pytest.approx(rewards[labels].mean().item(), abs=1e-5)
    assert metrics["rewards/rejected"] == pytest.approx(rewards[~labels].mean().item(), abs=1e-5)


def test_kto_loss_by_hand():
    # log-ratio 2, z_ref 0.5, beta 0.5: desirable 1 - sigmoid(0.75), undesirable 1 - sigmoid(-0.75), weighted.
    losses, rewards = kto_loss(torch.tensor([2.0, 2.0]), torch.zeros(2), torch.tensor([True, False]),
                               torch.tensor(0.5), beta=0.5, desirable_weight=2.0, undesirable_weight=3.0)
    s = torch.sigmoid(torch.tensor(0.75)).item()
    assert losses.tolist() == pytest.approx([2 * (1 - s), 3 * s]) and rewards.tolist() == [1.0, 1.0]
    assert kl_estimate(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 2.0])).item() == 0.0  # negative mean: clamped
    assert not kl_estimate(torch.tensor([3.0], requires_grad=True), torch.tensor([1.0])).requires_grad


# ---- data ---------------------------------------------------------------------------------


def test_mismatched_rows_pair_each_context_with_the_previous_reply():
    tokenizer = CharTokenizer(CHARS)
    examples = [{"prompt": [{"role": "user", "content": p}], "completion": c, "label": lab}
                for p, c, lab in (("aa", "one", True), ("bbb", "two", False), ("c", "three", True))]
    encoded = encode_examples(tokenizer, examples, 64)
    for (context, reply, _), example in zip(encoded, examples):
        ids, mask = encode_reply(tokenizer, example["prompt"], example["completion"])
        assert tokenizer.decode(reply) == example["completion"] + "<|im_end|>" and ids[: len(context)] == context
    ids, response, lengths, labels = collate_examples(encoded, 64)
    assert labels.tolist() == [True, False, True] and ids.size(0) == 6
    decode = lambda r: tokenizer.decode(ids[r, : lengths[r]].tolist())  # noqa: E731
    replies = lambda r: tokenizer.decode(ids[r][response[r]].tolist())  # noqa: E731
    assert [replies(r) for r in range(3, 6)] == ["three<|im_end|>", "one<|im_end|>", "two<|im_end|>"]
    assert decode(3).startswith(decode(0)[: len(encoded[0][0])]) and "bbb" in decode(4)
    # A mismatched row that would pass block_size loses its reply's tail, never its context.
    long_context = {"prompt": [{"role": "user", "content": "b" * 20}], "completion": "x", "label": False}
    long_reply = {"prompt": [{"role": "user", "content": "c"}], "completion": "y" * 20, "label": True}
    pair = encode_examples(tokenizer, [long_context, long_reply], 64)
    block_size = max(len(context) + len(reply) for context, reply, _ in pair)
    ids, response, _, _ = collate_examples(pair, block_size)
    assert ids.size(1) == block_size and response[2, len(pair[0][0]):].all() and response[2].sum() == block_size - len(pair[0][0])


def test_files_of_examples_and_of_pairs(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        json.dumps({"prompt": "hi", "completion": "hello", "label": True}) + "\n"
        + json.dumps({"prompt": [{"role": "user", "content": "hi"}], "completion": {"role": "assistant", "content": "go"},
                      "label": False, "source": "thumbs"}) + "\n"
        + json.dumps({"prompt": "q", "completion": [{"role": "assistant", "content": "a"}], "label": True}) + "\n"
        + json.dumps({"prompt": "2+2?", "chosen": "4", "rejected": "5"}) + "\n")
    examples = read_examples(path)
    assert [(e["completion"], e["label"]) for e in examples] == [("hello", True), ("go", False), ("a", True), ("4", True), ("5", False)]
    assert examples[0]["prompt"] == [{"role": "user", "content": "hi"}] and examples[1]["source"] == "thumbs"
    assert pairs_to_examples([{"prompt": "p", "chosen": "c", "rejected": "r", "task": "t"}]) == [
        {"prompt": "p", "completion": "c", "label": True, "task": "t"}, {"prompt": "p", "completion": "r", "label": False, "task": "t"}]
    for line, message in [({"prompt": "hi", "completion": "x", "label": 1}, "must be true"),
                          ({"prompt": "hi", "completion": "x"}, "missing 'label'"),
                          ({"prompt": "hi", "completion": {"role": "user", "content": "x"}, "label": True}, "one assistant message"),
                          ({"prompt": [{"role": "assistant", "content": "x"}], "completion": "y", "label": True}, "prompt ends")]:
        bad = write_examples(tmp_path / "bad.jsonl", [line])
        with pytest.raises(DataError, match=f"line 1: .*{message}"):
            read_examples(bad)


def test_one_label_only_is_a_clear_error(base, tmp_path):
    only_good = write_examples(tmp_path / "good.jsonl", [e | {"label": True} for e in unpaired(40)])
    with pytest.raises(DataError, match=r"40 desirable .* 0 undesirable .*at least one of each") as caught:
        train_kto(base, str(only_good), tmp_path / "x", val=str(only_good), overrides={**FAST, "max_iters": 1}, progress=False)
    assert "groklm sft" in str(caught.value)
    assert not (tmp_path / "x").exists()


def test_bad_kto_settings_are_clear_errors(base, pair_files, tmp_path):
    train_file, _ = pair_files
    fast = {**FAST, "max_iters": 1}
    for kwargs, message in [({"beta": 0.0}, "beta must be > 0"), ({"desirable_weight": -1.0}, "desirable_weight"),
                            ({"undesirable_weight": 0.0}, "undesirable_weight must be > 0"),
                            ({"overrides": {**fast, "batch_size": 1}}, "batch_size must be at least 2")]:
        with pytest.raises(ConfigError, match=message):
            train_kto(base, str(train_file), tmp_path / "x", **{"overrides": fast, **kwargs}, progress=False)
    assert not (tmp_path / "x").exists()


def test_imbalanced_labels_draw_a_warning(base, tmp_path):
    examples = unpaired(60, seed=3)
    mostly_good = write_examples(tmp_path / "skewed.jsonl", [e | {"label": i % 6 != 0} for i, e in enumerate(examples)])
    with pytest.warns(UserWarning, match="the KTO authors advise"):
        train_kto(base, str(mostly_good), tmp_path / "skewed", overrides={**FAST, "max_iters": 1}, progress=False)


# ---- training -----------------------------------------------------------------------------


def test_kto_raises_desirable_and_lowers_undesirable_replies(base, pair_files, tmp_path):
    """Trained on the DPO tests' pair file as it is (each pair: one example of each label)."""
    train_file, test_file = pair_files
    out = train_kto(base, str(train_file), tmp_path / "kto", val=str(test_file), beta=0.5,
                    overrides={**FAST, "max_iters": 40, "log_interval": 1}, progress=False)
    records = read_metrics(out)
    # Step 1 logs the first batch before any update: policy = reference, so every log-ratio and
    # the KL are 0 and each loss is 1 - sigmoid(0) = 0.5.
    assert records[0]["kl"] == 0.0 and records[0]["rewards/margins"] == 0.0 and records[0]["loss"] == pytest.approx(0.5)
    last = records[-1]
    assert last["val_rewards/margins"] > 1.0 and last["val_accuracy"] > 0.8
    config = json.loads((out / "config.json").read_text())
    assert (config["stage"], config["arch"]) == ("kto", "gpt")
    assert config["kto"] == {"beta": 0.5, "desirable_weight": 1.0, "undesirable_weight": 1.0}
    # The output is a plain GPT run: desirable replies became likelier than under the base, undesirable less likely.
    tokenizer = CharTokenizer(CHARS)
    examples = encode_examples(tokenizer, pairs_to_examples(easy_pairs(16, seed=5)), 64)
    ids, response, _, labels = collate_examples(examples, 64)
    ids, response = ids.chunk(2)[0], response.chunk(2)[0]
    with torch.no_grad():
        change = sequence_logps(GPT.from_run(out), ids, response) - sequence_logps(GPT.from_run(base), ids, response)
    assert change[labels].mean() > 1.0 and change[~labels].mean() < -1.0


def test_loss_fn_matches_the_loss_on_the_models_log_probs(base):
    """The loss function scores the matched rows and the mismatched rows under both models and
    feeds kto_loss; a reference differing from the policy gives a nonzero KL and log-ratios."""
    torch.manual_seed(1)
    policy, reference = GPT.from_run(base), GPT.from_run(base)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    tokenizer = CharTokenizer(CHARS)
    batch = collate_examples(encode_examples(tokenizer, unpaired(8, seed=2), 64), 64)
    loss, stats = kto_loss_fn(reference, 0.4, 1.2, 0.9)(policy, batch)
    ids, response, _, labels = batch
    with torch.no_grad():
        pol, pol_kl = sequence_logps(policy, ids, response).chunk(2)
        ref, ref_kl = sequence_logps(reference, ids, response).chunk(2)
    kl = kl_estimate(pol_kl, ref_kl)
    expected, _ = kto_loss(pol, ref, labels, kl, 0.4, 1.2, 0.9)
    assert torch.allclose(loss, expected.mean(), atol=1e-5) and stats["kl"] == kl
    loss.backward()
    assert all(p.grad is not None for p in policy.parameters() if p.requires_grad)


def test_kto_resume_matches_an_uninterrupted_run(base, tmp_path):
    data = write_examples(tmp_path / "thumbs.jsonl", unpaired(80, seed=4))
    settings = {**FAST, "eval_interval": 3, "lr_decay_iters": 6, "warmup_iters": 2}
    straight = train_kto(base, str(data), tmp_path / "straight", beta=0.2, overrides={**settings, "max_iters": 6}, progress=False)
    cut = train_kto(base, str(data), tmp_path / "cut", beta=0.2, overrides={**settings, "max_iters": 3}, progress=False)
    train_kto(None, None, cut, overrides={"max_iters": 6}, resume=True, progress=False)
    a, b = GPT.from_run(straight).state_dict(), GPT.from_run(cut).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((cut / "config.json").read_text())["kto"]["beta"] == 0.2


def test_cli_runs_kto(base, tmp_path, capsys):
    from groklm.cli.main import main

    data = write_examples(tmp_path / "thumbs.jsonl", unpaired(60, seed=6))
    out = tmp_path / "kto"
    main(["kto", str(base), "--data", str(data), "--out", str(out), "--beta", "0.2", "--desirable-weight", "1.2",
          "--undesirable-weight", "1.1", "--no-progress",
          "--set", "max_iters=2", "eval_interval=2", "eval_iters=1", "batch_size=4", "device=cpu"])
    assert "accuracy" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["kto"] == {"beta": 0.2, "desirable_weight": 1.2, "undesirable_weight": 1.1}
    assert config["data"]["spec"] == str(data.resolve()) and config["parent"] == str(base.resolve())
    records = read_metrics(out)
    assert records[-1]["step"] == 2 and {"loss", "kl", "accuracy", "val_loss", "val_kl"} <= set(records[-1])
    assert (out / "tokenizer").is_dir()
    GPT.from_run(out)


def test_lora_kto_reference_is_the_base_with_adapters_off(base, pair_files, tmp_path):
    tokenizer = CharTokenizer(CHARS)
    batch = collate_examples(encode_examples(tokenizer, unpaired(8, seed=3), 64), 64)
    policy = lora_policy(base)
    one_copy, _ = kto_loss_fn(None, 0.5, 1.0, 1.0)(policy, batch)
    two_copies, _ = kto_loss_fn(GPT.from_run(base), 0.5, 1.0, 1.0)(policy, batch)
    assert abs(one_copy.item() - 0.5) > 1e-3 and torch.allclose(one_copy, two_copies, atol=1e-6)
    assert policy.training and all(layer.enabled for layer in lora_layers(policy).values())
    train_file, _ = pair_files
    out = train_kto(base, str(train_file), tmp_path / "lora", overrides={**FAST, "lora_rank": 4, "max_iters": 2},
                    progress=False)
    assert (out / ADAPTERS_FILE).is_file() and not list(out.rglob("model.safetensors"))
