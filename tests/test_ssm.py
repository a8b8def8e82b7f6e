"""Mamba, RWKV and the Jamba-style hybrid (groklm/model/mamba.py, rwkv.py, jamba.py): the recurrent
step equals the parallel training path, each path equals the formula it implements, causality,
learning, the arch through a run directory and `pretrain`, generation, `compare --models`, and
bad settings."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

import groklm
from groklm.cli.main import main
from groklm.data.prepare import prepare
from groklm.errors import ConfigError
from groklm.experiments.compare import MODELS, WIDTH_STEP, check_models, count_params, size_model
from groklm.infer.decode import CarriedState, WindowedForward, decode
from groklm.model.arch import LM_ARCHS, build_model, load_model, make_config
from groklm.model.jamba import AttentionLayer, JambaConfig, JambaLM, MambaLayer
from groklm.model.mamba import MambaConfig, MambaLM, MambaMixer, doubling_scan, linear_scan
from groklm.model.rwkv import RWKVLM, RWKVConfig, TimeMix
from groklm.model.weights import save_weights
from groklm.rundir import RunDir
from groklm.train.pretrain import pretrain

from helpers.runs import read_metrics

FAMILIES = ("mamba", "rwkv", "jamba")
TINY_SHAPES = {
    "mamba": {"n_layer": 2, "n_embd": 16, "d_state": 4},
    "rwkv": {"n_layer": 2, "n_embd": 16},
    "jamba": {"n_layer": 3, "n_embd": 16, "n_head": 2, "attn_every": 2, "d_state": 4},
}
VOCAB = 30


def tiny_model(family: str, seed: int = 0, **extra):
    torch.manual_seed(seed)
    return build_model(family, make_config(family, {"vocab_size": VOCAB, "block_size": 32, **TINY_SHAPES[family],
                                                    **extra}))


def shaken(model):
    """The model with every parameter moved well off its initial value, in eval mode: decays,
    bonuses, token-shift mixes and convolution weights all away from their tidy starting values,
    and logits of order one, so that an error in either path shows."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


# ---- the recurrent step is the parallel form --------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_the_recurrent_step_equals_the_parallel_forward(family):
    model = shaken(tiny_model(family))
    idx = torch.randint(0, VOCAB, (2, 17))
    with torch.no_grad():
        parallel, _ = model(idx)
        stepped, _ = model.step(idx)
        first, state = model.step(idx[:, :6])
        rest, _ = model.step(idx[:, 6:], state)
    assert parallel.abs().max() > 1.0  # logits of a size where a wrong term would show
    torch.testing.assert_close(stepped, parallel, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), parallel, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scan", [linear_scan, doubling_scan])
def test_each_scan_is_the_recurrence(scan):
    torch.manual_seed(0)
    for T in (1, 2, 7, 16, 33):
        a, b = torch.rand(2, T, 3, 4), torch.randn(2, T, 3, 4)
        h, expected = torch.zeros(2, 3, 4), []
        for t in range(T):
            h = a[:, t] * h + b[:, t]
            expected.append(h)
        torch.testing.assert_close(scan(a, b), torch.stack(expected, dim=1))


def test_the_mamba_mixer_is_its_selective_ssm_written_out():
    """y_t = C_t . h_t + D u_t with h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t, delta, B and C
    read from the input: the mixer's output, recomputed from its parameters one step at a time."""
    mixer = shaken(MambaMixer(MambaConfig(n_embd=8, d_state=3, d_conv=3)))
    x = torch.randn(1, 9, 8)
    with torch.no_grad():
        u, z = mixer.in_proj(x).chunk(2, dim=-1)
        kernel = mixer.conv.weight[:, 0]  # (inner, d_conv), oldest position first
        padded = torch.nn.functional.pad(u, (0, 0, kernel.size(1) - 1, 0))
        h, outputs, deltas = torch.zeros(mixer.inner, 3), [], []
        for t in range(9):
            conv = (padded[0, t:t + kernel.size(1)].T * kernel).sum(-1) + mixer.conv.bias
            u_t = torch.nn.functional.silu(conv)
            dt_low, B, C = mixer.x_proj(u_t).split([mixer.dt_rank, 3, 3])
            delta = torch.nn.functional.softplus(mixer.dt_proj(dt_low))
            A = -torch.exp(mixer.A_log)
            h = torch.exp(delta[:, None] * A) * h + delta[:, None] * B[None, :] * u_t[:, None]
            y = h @ C + mixer.D * u_t
            outputs.append(mixer.out_proj(y * torch.nn.functional.silu(z[0, t])))
            deltas.append(delta)
        torch.testing.assert_close(mixer(x)[0], torch.stack(outputs), atol=1e-5, rtol=1e-5)
    deltas = torch.stack(deltas)
    assert (deltas.max(0).values - deltas.min(0).values).min() > 0  # the step size moves with the input


def test_rwkv_time_mixing_is_its_weighted_average_written_out():
    """wkv_t = (sum_{i<t} e^{-(t-1-i)w + k_i} v_i + e^{u+k_t} v_t) / (the same weights' sum), with
    w = exp(w_raw) and r, k, v read from the token-shifted input: a wrong shift (the current
    token instead of the previous one) or a missing or misplaced bonus u fails here."""
    mix = shaken(TimeMix(RWKVConfig(n_embd=6, n_layer=2), layer=1))
    x = torch.randn(1, 21, 6)  # past the training path's first chunk
    with torch.no_grad():
        previous = torch.cat([torch.zeros(1, 1, 6), x[:, :-1]], dim=1)
        r = mix.receptance(x * mix.mix_r + previous * (1 - mix.mix_r))[0]
        k = mix.key(x * mix.mix_k + previous * (1 - mix.mix_k))[0]
        v = mix.value(x * mix.mix_v + previous * (1 - mix.mix_v))[0]
        w = torch.exp(mix.w_raw)
        rows = []
        for t in range(21):
            weights = [torch.exp(-(t - 1 - i) * w + k[i]) for i in range(t)] + [torch.exp(mix.u + k[t])]
            wkv = sum(wt * v[i] for i, wt in enumerate(weights)) / sum(weights)
            rows.append(mix.output(torch.sigmoid(r[t]) * wkv))
        torch.testing.assert_close(mix(x)[0], torch.stack(rows), atol=1e-5, rtol=1e-5)


def test_rwkv_steps_stay_finite_where_the_plain_sums_overflow():
    """Keys of a few hundred make e^k overflow float32: the running maximum keeps the recurrence
    (and the softmax keeps the parallel form) finite, and the two still agree."""
    mix = TimeMix(RWKVConfig(n_embd=4, n_layer=1), layer=0).eval()
    with torch.no_grad():
        mix.key.weight.copy_(torch.eye(4) * 400.0)
    x = torch.randn(1, 40, 4)  # several chunks of the training path
    with torch.no_grad():
        parallel = mix(x)
        state, stepped = None, []
        for t in range(40):
            out, state = mix.step(x[:, t], state)
            stepped.append(out)
    assert torch.isfinite(parallel).all()
    torch.testing.assert_close(torch.stack(stepped, dim=1), parallel, atol=1e-5, rtol=1e-4)


# ---- causality and learning -------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_a_token_changes_nothing_before_it(family):
    model = shaken(tiny_model(family))
    idx = torch.randint(0, VOCAB, (1, 12))
    changed = idx.clone()
    changed[0, 7] = (idx[0, 7] + 1) % VOCAB
    with torch.no_grad():
        before, _ = model(idx)
        after, _ = model(changed)
    torch.testing.assert_close(after[:, :7], before[:, :7], atol=0, rtol=0)
    assert (after[:, 7:] - before[:, 7:]).abs().amax(-1).min() > 1e-4  # and it does change what follows


@pytest.mark.parametrize("family", FAMILIES)
def test_a_few_adamw_steps_learn_a_repeating_sequence(family):
    model = tiny_model(family).train()
    pattern = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    rows = torch.stack([pattern.roll(-shift).repeat(3) for shift in range(4)])  # (4, 24)
    x, y = rows[:, :-1], rows[:, 1:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], (family, losses[0], losses[-1])


# ---- the arch: run directories, pretrain, generation ------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_the_arch_round_trips_through_a_run_directory(tmp_path, family):
    model = shaken(tiny_model(family))
    run = RunDir(tmp_path / family)
    run.write_config("pretrain", parent=None, arch=family, model=model.config.to_dict(), train={}, data={})
    save_weights(model, run.weights_path)
    loaded = load_model(tmp_path / family)
    assert family in LM_ARCHS and type(loaded) is type(model) and loaded.config == model.config
    idx = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx)[0], model(idx)[0])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Character-level shards of a tiny, very regular corpus."""
    root = tmp_path_factory.mktemp("ssm")
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran"]
    (root / "text.txt").write_text("\n".join(" ".join(rng.choice(words) for _ in range(6)) + "." for _ in range(800)))
    prepare([str(root / "text.txt")], "char", root / "data", progress=False)
    return root / "data"


@pytest.mark.parametrize("family", FAMILIES)
def test_pretrain_trains_each_family_and_groklm_load_reads_it(data, tmp_path, family):
    extra = {"n_head": 2, "attn_every": 2} if family == "jamba" else {}
    settings = {"n_layer": 2, "n_embd": 32, "block_size": 16, "batch_size": 8, "max_iters": 60, "eval_interval": 30,
                "eval_iters": 2, "log_interval": 10, "warmup_iters": 5, "lr": 1e-2, "min_lr": 1e-3, "device": "cpu"}
    run = pretrain(data, tmp_path / family, overrides={**settings, **extra, "arch": family}, progress=False)
    records = read_metrics(run)
    assert json.loads((run / "config.json").read_text())["arch"] == family
    assert records[-1]["val_loss"] < 0.6 * records[0]["loss"], (family, records[0]["loss"], records[-1]["val_loss"])
    model, _ = groklm.load(run)
    assert type(model) is {"mamba": MambaLM, "rwkv": RWKVLM, "jamba": JambaLM}[family]


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_decoding_from_the_carried_state_equals_rereading_the_window(family):
    """The state carried token by token gives the tokens a full forward pass over the text gives."""
    model = shaken(tiny_model(family))
    prompt = torch.tensor([[1, 2, 3, 4]])
    carried = torch.cat([s.token for s in decode(CarriedState(model), prompt, 12, temperature=0)], dim=1)
    windowed = torch.cat([s.token for s in decode(WindowedForward(model), prompt, 12, temperature=0)], dim=1)
    assert carried.tolist() == windowed.tolist()


def test_jamba_interleaves_attention_among_mamba_layers():
    model = JambaLM(JambaConfig(vocab_size=VOCAB, n_layer=8, n_embd=16, n_head=2, attn_every=4))
    kinds = ["attention" if isinstance(b, AttentionLayer) else "mamba" for b in model.blocks]
    assert kinds == ["mamba", "mamba", "attention", "mamba"] * 2
    assert all(isinstance(b, MambaLayer) for b in model.blocks if not isinstance(b, AttentionLayer))
    every = JambaLM(JambaConfig(vocab_size=VOCAB, n_layer=2, n_embd=16, n_head=2, attn_every=1))
    assert all(isinstance(b, AttentionLayer) for b in every.blocks)


# ---- compare ------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_compare_sizes_each_family_to_the_budget(family):
    assert family in MODELS and check_models([family], 1000, [1]) == [family]
    for budget in (20_000, 80_000):
        arch, values = size_model(family, budget, 64, {"block_size": 32}, 4, 2)
        params = count_params(arch, values)
        wider = count_params(arch, {**values, "n_embd": values["n_embd"] + WIDTH_STEP})
        narrower = count_params(arch, {**values, "n_embd": values["n_embd"] - WIDTH_STEP}) if values["n_embd"] > WIDTH_STEP else 0
        assert arch == family and abs(params - budget) <= min(abs(wider - budget), abs(narrower - budget))


def test_compare_runs_the_challengers_end_to_end(data, tmp_path, capsys):
    out = tmp_path / "cmp"
    main(["compare", "--data", str(data), "--budget-params", "8000", "--budget-seconds", "0.3", "--out", str(out),
          "--models", "gpt,mamba,rwkv,jamba", "--sample-tokens", "5", "--no-progress", "--lr-search", "off",
          "--set", "block_size=16", "eval_iters=1", "batch_size=4"])
    report = json.loads((out / "report.json").read_text())
    assert list(report["models"]) == ["gpt", "mamba", "rwkv", "jamba"]
    for name in FAMILIES:
        result = report["models"][name]
        assert math.isfinite(result["val_loss"]) and result["arch"] == name and result["steps"] >= 10
        assert json.loads((out / "runs" / f"{name}-0.3s" / "config.json").read_text())["arch"] == name
    assert set(report["crossover"]) == {"mamba", "rwkv"}  # stated against the models with a fixed-size state
    assert "| jamba |" in (out / "report.md").read_text() and "| jamba |" in capsys.readouterr().out


def test_compare_help_lists_the_challengers(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    assert "mamba, rwkv, jamba" in " ".join(capsys.readouterr().out.split())  # argparse wraps the lines


# ---- bad settings -------------------------------------------------------------------------------


def test_bad_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="d_state must be a positive integer"):
        MambaConfig(d_state=0)
    with pytest.raises(ConfigError, match=r"unknown RWKVConfig key\(s\) \['d_state'\]"):
        make_config("rwkv", {"d_state": 4})
    with pytest.raises(ConfigError, match="dropout must be in"):
        RWKVConfig(dropout=1.5)
    with pytest.raises(ConfigError, match="has no attention layer"):
        JambaConfig(n_layer=2, attn_every=8)
    with pytest.raises(ConfigError, match="divisible by n_head"):
        JambaConfig(n_embd=30, n_head=4)
    with pytest.raises(ConfigError, match="arch must be one of"):
        make_config("mamba2", {})
