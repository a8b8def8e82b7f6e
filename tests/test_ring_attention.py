"""Ring attention and sequence parallelism (groklm/model/ring_attention.py).

2 and 3 gloo processes on the CPU each hold their contiguous share of the sequence; together
they give the outputs and the q/k/v gradients of causal attention over the whole sequence
(PyTorch's scaled_dot_product_attention is the oracle), with grouped-query heads too, passing
key/value blocks point to point only. A GPT run that way gives the whole model's logits and
gradients, and `groklm pretrain --sequence-parallel` under torchrun trains as one process does
on the full sequences.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from groklm.errors import ConfigError
from groklm.model import GPT
from groklm.model.attention import set_sequence_parallel
from groklm.model.config import GPTConfig
from groklm.model.ring_attention import ring_attention
from groklm.train.pretrain import pretrain

from helpers.runs import read_metrics
from helpers.training import TINY, ddp_pretrain, make_data

B, T, HEAD_DIM = 2, 12, 8  # T: the whole sequence, a multiple of 2 and 3
# (query heads, kv heads): plain multi-head attention, and grouped-query heads (2 queries per kv head)
HEADS = {"mha": (4, 4), "gqa": (4, 2)}
# Small GPTs with each way of telling positions that needs the shard's offset.
MODELS = {
    "rope-gqa": GPTConfig(vocab_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=T, pos="rope"),
    "learned": GPTConfig(vocab_size=32, n_layer=2, n_head=2, n_embd=32, block_size=T, pos="learned"),
}
COLLECTIVES = ("all_gather", "all_gather_into_tensor", "all_gather_object", "all_reduce", "broadcast",
               "reduce_scatter", "reduce_scatter_tensor", "all_to_all", "all_to_all_single")


def attention_inputs(n_head: int, n_kv_head: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """(q, k, v, grad_out) over the whole sequence, the same in every process."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(B, n_head, T, HEAD_DIM), (B, n_kv_head, T, HEAD_DIM), (B, n_kv_head, T, HEAD_DIM), (B, n_head, T, HEAD_DIM)]
    return tuple(torch.randn(shape, generator=g) for shape in shapes)


def gpt_inputs(config: GPTConfig) -> tuple[GPT, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = GPT(config)
    g = torch.Generator().manual_seed(1)
    idx, targets = torch.randint(0, config.vocab_size, (2, B, T), generator=g)
    return model, idx, targets


def shard(x: torch.Tensor, rank: int, world: int, dim: int) -> torch.Tensor:
    n = x.size(dim) // world
    return x.narrow(dim, rank * n, n)


def ranks_worker(rank: int, world: int, store: str, out: str) -> None:
    """One process of the ring: its share of every case, with every collective made to fail
    (only point-to-point traffic may pass) and the ring's batches of sends counted."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.set_num_threads(1)

    def refuse(*args, **kwargs):
        raise AssertionError("ring attention must not use collectives")

    for name in COLLECTIVES:
        setattr(dist, name, refuse)
    passes = []  # the number of sends and receives in each batch
    send_batch = dist.batch_isend_irecv

    def counted(ops):
        passes.append(len(ops))
        return send_batch(ops)

    dist.batch_isend_irecv = counted

    results: dict = {}
    for case, (n_head, n_kv_head) in HEADS.items():
        passes.clear()
        q, k, v, grad_out = (shard(t, rank, world, dim=2).clone().requires_grad_() for t in attention_inputs(n_head, n_kv_head))
        y = ring_attention(q, k, v, dist.group.WORLD)
        y.backward(grad_out.detach())
        results[case] = {"y": y.detach(), "dq": q.grad, "dk": k.grad, "dv": v.grad, "passes": list(passes)}
    for case, config in MODELS.items():
        model, idx, targets = gpt_inputs(config)
        set_sequence_parallel(model, dist.group.WORLD)
        positions = torch.arange(rank * T // world, (rank + 1) * T // world).expand(B, -1)
        logits, loss = model(shard(idx, rank, world, 1), shard(targets, rank, world, 1), positions=positions)
        loss.backward()
        results[case] = {"logits": logits.detach(), "loss": loss.item(),
                         "grads": {name: p.grad for name, p in model.named_parameters()}}
    torch.save(results, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module", params=[2, 3], ids=lambda world: f"{world}-ranks")
def ranks(request, tmp_path_factory) -> list[dict]:
    """What each of `world` processes computed (ranks_worker), once per world size. Forked, not
    spawned: the children start with torch already imported (a second of start-up, not ten).
    start_processes returns when every process has ended, and raises if one failed."""
    world, folder = request.param, tmp_path_factory.mktemp("ring")
    mp.start_processes(ranks_worker, args=(world, str(folder / "store"), str(folder)), nprocs=world, start_method="fork")
    return [torch.load(folder / f"rank{rank}.pt") for rank in range(world)]


def full_attention(case: str) -> dict:
    """The oracle: causal attention over the whole sequence, and its gradients."""
    q, k, v, grad_out = attention_inputs(*HEADS[case])
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    y.backward(grad_out)
    return {"y": y.detach(), "dq": q.grad, "dk": k.grad, "dv": v.grad}


def joined(ranks: list[dict], case: str, key: str, dim: int = 2) -> torch.Tensor:
    return torch.cat([r[case][key] for r in ranks], dim=dim)


def test_outputs_match_full_causal_attention(ranks):
    full = full_attention("mha")
    torch.testing.assert_close(joined(ranks, "mha", "y"), full["y"], atol=1e-5, rtol=1e-5)


def test_gradients_match_full_causal_attention(ranks):
    full = full_attention("mha")
    for grad in ("dq", "dk", "dv"):
        torch.testing.assert_close(joined(ranks, "mha", grad), full[grad], atol=1e-5, rtol=1e-5, msg=grad)


def test_grouped_query_heads(ranks):
    full = full_attention("gqa")
    assert ranks[0]["gqa"]["dk"].shape[1] == 2  # each rank's kv gradient keeps the kv heads' shape
    for key in ("y", "dq", "dk", "dv"):
        torch.testing.assert_close(joined(ranks, "gqa", key), full[key], atol=1e-5, rtol=1e-5, msg=key)


def test_traffic_is_point_to_point(ranks):
    """The worker made every collective raise; the blocks went round in batches of sends and
    receives: forward, k and v W-1 times; backward, k and v W-1 times and their gradients W times
    (the last pass takes them home)."""
    world = len(ranks)
    for rank in ranks:
        assert rank["mha"]["passes"] == [4] * (world - 1) + [4, 4] * (world - 1) + [4]


@pytest.mark.parametrize("case", MODELS)
def test_sequence_parallel_gpt_matches_whole_sequences(ranks, case):
    """Each rank's logits are the whole model's at its positions; the mean of the ranks' slice
    losses is the whole loss, and the mean of their gradients (what DDP averages) its gradient."""
    model, idx, targets = gpt_inputs(MODELS[case])
    logits, loss = model(idx, targets)
    loss.backward()
    torch.testing.assert_close(joined(ranks, case, "logits", dim=1), logits.detach(), atol=1e-5, rtol=1e-5)
    assert sum(r[case]["loss"] for r in ranks) / len(ranks) == pytest.approx(loss.item(), abs=1e-5)
    for name, p in model.named_parameters():
        mean = sum(r[case]["grads"][name] for r in ranks) / len(ranks)
        torch.testing.assert_close(mean, p.grad, atol=1e-5, rtol=1e-4, msg=name)


# ---- pretraining ----------------------------------------------------------------------------

RUN = {**TINY, "max_iters": 6, "log_interval": 1, "eval_interval": 3, "grad_accum": 2, "pos": "rope", "n_head": 4,
       "n_kv_head": 2, "lr": 1e-2, "dtype": "float32"}  # float32: bf16 rounds the two runs apart


def test_pretrain_sequence_parallel_matches_one_process(tmp_path):
    """Two processes, each with half of every sequence, take the steps one process takes on the
    whole sequences: the same losses, the same weights."""
    data = make_data(tmp_path / "data")
    single = pretrain(data, tmp_path / "single", overrides=RUN, progress=False)
    split = ddp_pretrain(data, tmp_path / "split", RUN, "--sequence-parallel")

    for a, b in zip(read_metrics(split), read_metrics(single), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5), a["step"]
        assert a.get("val_loss", 0) == pytest.approx(b.get("val_loss", 0), abs=1e-5), a["step"]
    weights, expected = GPT.from_run(split).state_dict(), GPT.from_run(single).state_dict()
    for name, value in expected.items():
        torch.testing.assert_close(weights[name], value, atol=1e-5, rtol=1e-4, msg=name)


def test_sequence_parallel_needs_processes_and_equal_shares(tmp_path, monkeypatch):
    data = make_data(tmp_path / "data")
    overrides = {**RUN, "sequence_parallel": "true"}
    with pytest.raises(ConfigError, match="torchrun"):
        pretrain(data, tmp_path / "one", overrides=overrides, progress=False)
    monkeypatch.setenv("WORLD_SIZE", "3")  # checked before any process group is joined
    with pytest.raises(ConfigError, match="block_size=16 .* 3 processes"):
        pretrain(data, tmp_path / "three", overrides=overrides, progress=False)
    assert not (tmp_path / "one").exists() and not (tmp_path / "three").exists()
