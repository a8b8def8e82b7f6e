"""DPO: the loss against TRL's, log-probs over exactly the reply's tokens, a short run that
separates chosen from rejected, resume, bad settings. The tiny run and the pairs are the reward
tests' (the `base` and `pair_files` fixtures in conftest.py)."""

from __future__ import annotations

import json

import pytest
import torch

from groklm.errors import CheckpointError, ConfigError
from groklm.model import GPT
from groklm.tokenizer.char import CharTokenizer
from groklm.train.dpo import dpo_loss, dpo_loss_fn, train_dpo
from groklm.train.preferences import collate, encode_pairs, encode_reply, sequence_logps, token_logps

from helpers.preferences import CHARS, FAST, easy_pairs, trl_losses
from helpers.runs import read_metrics

# ---- the loss, against TRL ----------------------------------------------------------------


@pytest.mark.parametrize("loss_type, smoothing", [("sigmoid", 0.0), ("sigmoid", 0.2), ("ipo", 0.0)])
def test_dpo_loss_equals_trl(loss_type, smoothing):
    """Same log-probabilities in, same loss and rewards out. TRL's IPO averages the log-probs
    over the reply's tokens (our DPO stage does the same for ipo); its sigmoid loss has no label
    smoothing any more, but its "aot" loss is conservative DPO over sorted log-ratios, which for
    one pair at a time (nothing to sort) is exactly sigmoid with label smoothing."""
    gen = torch.Generator().manual_seed(0)
    B, T, beta = 6, 12, 0.3
    per_token = -torch.rand(2 * B, T - 1, generator=gen) * 3
    mask = torch.zeros(2 * B, T, dtype=torch.bool)
    for r in range(2 * B):
        start = int(torch.randint(2, T - 2, (1,), generator=gen))
        mask[r, start : start + int(torch.randint(1, T - start, (1,), generator=gen))] = True
    tokens = mask[:, 1:].sum(1).clamp(min=1)
    ref = (per_token * mask[:, 1:]).sum(1) + torch.randn(2 * B, generator=gen)  # reference sums
    policy = (per_token * mask[:, 1:]).sum(1)
    if loss_type == "ipo":
        ref_in, policy, ours_ref = ref, policy / tokens, ref / tokens  # TRL divides both by the token count
    else:
        ref_in, ours_ref = ref, ref
    pc, pr = policy.chunk(2)
    rc, rr = ours_ref.chunk(2)
    losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta, loss_type, smoothing)
    worst = 0.0
    if smoothing:
        for i in range(B):  # one pair per call: TRL's aot sort is then the identity
            rows = [i, B + i]
            loss, _ = trl_losses(per_token[rows], ref_in[rows], mask[rows], "aot", beta, smoothing)
            worst = max(worst, abs(loss.item() - losses[i].item()))
    else:
        loss, metrics = trl_losses(per_token, ref_in, mask, loss_type, beta)
        worst = abs(loss.item() - losses.mean().item())
        if loss_type == "sigmoid":  # TRL logs rewards from the summed log-ratios
            assert metrics["rewards/chosen"] == pytest.approx(chosen.mean().item(), abs=1e-5)
            assert metrics["rewards/margins"] == pytest.approx((chosen - rejected).mean().item(), abs=1e-5)
            assert metrics["rewards/accuracies"] == pytest.approx((chosen > rejected).float().mean().item())
    print(f"max |ours - TRL| ({loss_type}, eps={smoothing}): {worst:.2e}")
    assert worst < 1e-6


def test_dpo_loss_by_hand():
    one = torch.tensor([1.0])
    zero = torch.tensor([0.0])
    # h = (1 - 0) - (0 - 0) = 1; beta = 0.5
    losses, chosen, rejected = dpo_loss(one, zero, zero, zero, 0.5, "sigmoid", 0.1)
    expected = -0.9 * torch.nn.functional.logsigmoid(torch.tensor(0.5)) - 0.1 * torch.nn.functional.logsigmoid(torch.tensor(-0.5))
    assert torch.allclose(losses, expected[None]) and chosen.item() == 0.5 and rejected.item() == 0.0
    assert dpo_loss(one, zero, zero, zero, 0.5, "ipo")[0].item() == pytest.approx(0.0)  # h = 1/(2*0.5): at the target
    with pytest.raises(ConfigError, match="unknown DPO loss"):
        dpo_loss(one, zero, zero, zero, 0.5, "hinge")


# ---- log-probabilities over the reply -----------------------------------------------------


def test_response_mask_covers_exactly_the_reply():
    tokenizer = CharTokenizer(CHARS)
    prompt = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "earlier"}, {"role": "user", "content": "more"}]
    ids, mask = encode_reply(tokenizer, prompt, "the reply")
    reply = [i for i, m in zip(ids, mask) if m]
    assert tokenizer.decode(reply) == "the reply<|im_end|>"  # not the earlier assistant turn, not the newline


def test_sequence_logps_sum_the_reply_tokens_only(base):
    torch.manual_seed(0)
    model = GPT.from_run(base)
    tokenizer = CharTokenizer(CHARS)
    ids, response, lengths = collate(encode_pairs(tokenizer, easy_pairs(4), 64))
    got = sequence_logps(model, ids, response)
    for r in range(ids.size(0)):
        row = ids[r, : lengths[r]]
        logits, _ = model(row[None])
        logps = torch.log_softmax(logits[0], -1)
        expected = sum(logps[t - 1, row[t]] for t in range(len(row)) if response[r, t])
        assert torch.allclose(got[r], expected, atol=1e-4)
    # Changing a prompt token changes the log-probs (context) but changing padding does not.
    padded = ids.clone()
    padded[response.sum(1) > 0, -1] = torch.where(lengths < ids.size(1), 5, padded[:, -1])[response.sum(1) > 0]
    assert torch.allclose(sequence_logps(model, padded, response), got, atol=1e-5)
    assert token_logps(model, ids)[:, 0].eq(0).all()
    average = sequence_logps(model, ids, response, average=True)
    assert torch.allclose(average, got / response.sum(1))


def test_sft_weight_adds_the_chosen_replies_per_token_nll(base):
    model = GPT.from_run(base)
    tokenizer = CharTokenizer(CHARS)
    batch = collate(encode_pairs(tokenizer, easy_pairs(4), 64))
    plain, _ = dpo_loss_fn(model, 0.1, "sigmoid", 0.0)(model, batch)
    rpo, _ = dpo_loss_fn(model, 0.1, "sigmoid", 0.0, sft_weight=0.5)(model, batch)
    ids, response, _ = batch
    chosen_nll = -sequence_logps(model, ids, response, average=True).chunk(2)[0].mean()
    assert torch.allclose(rpo, plain + 0.5 * chosen_nll, atol=1e-5)


# ---- training -----------------------------------------------------------------------------


def test_dpo_separates_chosen_from_rejected(base, pair_files, tmp_path):
    train_file, test_file = pair_files
    out = train_dpo(base, str(train_file), tmp_path / "dpo", val=str(test_file), beta=0.5,
                    overrides={**FAST, "max_iters": 40, "log_interval": 1}, progress=False)
    records = read_metrics(out)
    # Step 1 logs the stats of the first batch, before any update: policy = reference.
    assert records[0]["rewards/margins"] == 0.0 and records[0]["loss"] == pytest.approx(0.6931472)
    last = records[-1]
    assert last["val_rewards/margins"] > 1.0 and last["val_accuracy"] > 0.9
    config = json.loads((out / "config.json").read_text())
    assert (config["stage"], config["arch"], config["dpo"]["beta"]) == ("dpo", "gpt", 0.5)
    # The output is a plain GPT run whose chosen-vs-rejected log-prob gap grew over the base's.
    tokenizer = CharTokenizer(CHARS)
    ids, response, _ = collate(encode_pairs(tokenizer, easy_pairs(16, seed=5), 64))
    with torch.no_grad():
        before = sequence_logps(GPT.from_run(base), ids, response).chunk(2)
        after = sequence_logps(GPT.from_run(out), ids, response).chunk(2)
    assert ((after[0] - after[1]) - (before[0] - before[1])).mean() > 2.0


def test_dpo_resume_matches_an_uninterrupted_run(base, pair_files, tmp_path):
    train_file, _ = pair_files
    settings = {**FAST, "eval_interval": 3, "lr_decay_iters": 6, "warmup_iters": 2}
    straight = train_dpo(base, str(train_file), tmp_path / "straight", loss_type="ipo", beta=0.2,
                         overrides={**settings, "max_iters": 6}, progress=False)
    cut = train_dpo(base, str(train_file), tmp_path / "cut", loss_type="ipo", beta=0.2,
                    overrides={**settings, "max_iters": 3}, progress=False)
    train_dpo(None, None, cut, overrides={"max_iters": 6}, resume=True, progress=False)
    a, b = GPT.from_run(straight).state_dict(), GPT.from_run(cut).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_metrics(straight) == [r | {"elapsed": s["elapsed"], "tokens_per_sec": s["tokens_per_sec"]}
                                      for r, s in zip(read_metrics(cut), read_metrics(straight))]


def test_cli_runs_dpo(base, pair_files, tmp_path, monkeypatch):
    from groklm.cli.main import main

    train_file, _ = pair_files
    out = tmp_path / "dpo"
    main(["dpo", str(base), "--data", str(train_file), "--out", str(out), "--beta", "0.2", "--label-smoothing", "0.1",
              "--sft-weight", "0.5", "--no-progress",
              "--set", "max_iters=2", "eval_interval=2", "eval_iters=1", "batch_size=2", "device=cpu"])
    assert json.loads((out / "config.json").read_text())["dpo"] == {"beta": 0.2, "loss": "sigmoid", "label_smoothing": 0.1,
                                                                  "sft_weight": 0.5}
    GPT.from_run(out)


def test_bad_dpo_settings_are_clear_errors(base, pair_files, tmp_path):
    train_file, _ = pair_files
    fast = {**FAST, "max_iters": 1}
    for kwargs, message in [({"beta": 0.0}, "beta"), ({"loss_type": "hinge"}, "unknown DPO loss"),
                            ({"label_smoothing": 0.5}, "label_smoothing"),
                            ({"loss_type": "ipo", "label_smoothing": 0.1}, "sigmoid loss only")]:
        with pytest.raises(ConfigError, match=message):
            train_dpo(base, str(train_file), tmp_path / "x", overrides=fast, progress=False, **kwargs)
    from groklm.train.reward import train_reward

    rm = train_reward(base, str(train_file), tmp_path / "rm", overrides=fast, progress=False)
    with pytest.raises(CheckpointError, match="start from a GPT run"):
        train_dpo(rm, str(train_file), tmp_path / "y", overrides=fast, progress=False)
    with pytest.raises(ConfigError, match="not one of stage 'dpo'"):
        train_dpo(None, None, rm, resume=True, progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
