"""Ring attention: causal self-attention over a sequence split across the processes of a group.

Sequence parallelism gives rank r of W the contiguous r-th share of every sequence, positions
r*T ... (r+1)*T - 1 (T = the sequence length / W). Each rank's queries need the keys and values
of every earlier position, which the earlier ranks hold. Rather than gather the whole sequence
on every rank (memory of the full sequence again), the key/value blocks travel round a ring:

    step 0:   rank r attends to its own block (causal mask inside it)
    step s:   rank r holds the block of rank r - s, received from rank r - 1; it attends to it
              if that block lies earlier in the sequence, and passes it on to rank r + 1

After W - 1 passes every rank has seen every block. A rank never holds more than its own block
and the one in flight, so attention memory per rank is that of a sequence W times shorter.
Blocks from later ranks lie in the future of every query here: nothing is computed with them,
but they are passed along all the same, since the ranks after this one still need them.

The blocks' results are combined with the log-sum-exp trick of online softmax (FlashAttention):
a block's output is already normalized by its own softmax sum, and its log-sum-exp says how
much weight the block as a whole deserves beside the others. The backward pass travels the
ring too: each block's key/value gradient accumulates as the block goes round and is then
passed home to its owner; the softmax weights are rebuilt from the saved log-sum-exp instead
of being kept, as FlashAttention's backward does.

The arithmetic is float32 whatever the inputs (bf16 under autocast): the partial results
are rescaled and summed W times, and the blocks travel in the inputs' dtype.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist


def ring_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """Causal attention of this rank's shard: q (B, n_head, T, head_dim), k and v
    (B, n_kv_head, T, head_dim) at positions rank*T ... (rank+1)*T - 1 of sequences split over
    `group` -> (B, n_head, T, head_dim), what causal attention over the whole sequences gives at
    these positions. Grouped-query heads: kv head j serves the n_head / n_kv_head consecutive
    query heads from j * n_head / n_kv_head on (as repeat_interleave lays them out).

    Every rank of `group` must call it with shards of the same shape, in the same order."""
    return RingAttention.apply(q, k, v, group)


class RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, group):
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        qf = grouped(q, k.size(1)).float()
        scale = 1.0 / math.sqrt(q.size(-1))
        out = torch.zeros_like(qf)  # (B, n_kv_head, group size, T, head_dim)
        # lse: log of the softmax denominator over the keys combined so far, per query. It
        # starts at log 0; the first block (the rank's own) has every query's diagonal in it.
        lse = torch.full(qf.shape[:-1], float("-inf"), device=q.device)
        block = [k.contiguous(), v.contiguous()]
        with torch.autocast(q.device.type, enabled=False):  # the float32 arithmetic stays float32
            for step in range(world):
                if step < world - 1:  # start passing the block on now, so the transfer overlaps the compute
                    incoming, pending = pass_along(block, group)
                source = (rank - step) % world  # the rank whose keys and values `block` holds
                if source <= rank:
                    kb, vb = (t.float().unsqueeze(2) for t in block)  # one kv head for its group of query heads
                    scores = block_scores(qf, kb, scale, causal=source == rank)
                    block_lse = scores.logsumexp(dim=-1)
                    block_out = (scores - block_lse.unsqueeze(-1)).exp() @ vb  # softmax within the block
                    # Softmax over two sets of keys: each set's normalized output weighted by its
                    # share exp(its lse - combined lse) of the combined denominator.
                    combined = torch.logaddexp(lse, block_lse)
                    out = out * (lse - combined).exp().unsqueeze(-1) + block_out * (block_lse - combined).exp().unsqueeze(-1)
                    lse = combined
                if step < world - 1:
                    block = wait_for(incoming, pending)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.group = group
        return out.to(q.dtype).view_as(q)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        group = ctx.group
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        qf = grouped(q, k.size(1)).float()
        dout = grouped(grad_out, k.size(1)).float()
        scale = 1.0 / math.sqrt(q.size(-1))
        # d softmax: dS = P * (dP - rowsum(dP * P)), and rowsum(dP * P) = rowsum(dO * O) over
        # the whole row, whichever block the keys sit in: one number per query, computed once.
        delta = (dout * out).sum(dim=-1, keepdim=True)
        dq = torch.zeros_like(qf)
        kv = [k.contiguous(), v.contiguous()]
        dkv = [torch.zeros(k.shape, device=k.device), torch.zeros(v.shape, device=v.device)]  # travel with their block
        with torch.autocast(q.device.type, enabled=False):
            for step in range(world):
                if step < world - 1:
                    incoming, pending = pass_along(kv, group)
                source = (rank - step) % world
                if source <= rank:
                    kb, vb = (t.float().unsqueeze(2) for t in kv)
                    scores = block_scores(qf, kb, scale, causal=source == rank)
                    p = (scores - lse.unsqueeze(-1)).exp()  # this block's share of the forward's softmax weights
                    dp = dout @ vb.transpose(-2, -1)
                    ds = p * (dp - delta)
                    dq += ds @ kb * scale
                    # Summed over the query heads that share each kv head.
                    dkv[0] += (ds.transpose(-2, -1) @ qf).sum(dim=2) * scale
                    dkv[1] += (p.transpose(-2, -1) @ dout).sum(dim=2)
                # The gradients go round with their block; the last pass takes them home: after
                # W - 1 passes rank r holds rank r + 1's block, everyone's share added in.
                if world > 1:
                    dkv = wait_for(*pass_along(dkv, group))
                if step < world - 1:
                    kv = wait_for(incoming, pending)
        return dq.to(q.dtype).view_as(q), dkv[0].to(k.dtype), dkv[1].to(v.dtype), None


def grouped(x: torch.Tensor, n_kv_head: int) -> torch.Tensor:
    """(B, n_head, T, hd) -> (B, n_kv_head, n_head / n_kv_head, T, hd): the query heads each kv
    head serves, side by side, so one matmul serves the group without copying its keys."""
    B, n_head, T, hd = x.shape
    return x.view(B, n_kv_head, n_head // n_kv_head, T, hd)


def block_scores(q: torch.Tensor, k: torch.Tensor, scale: float, causal: bool) -> torch.Tensor:
    """q . k / sqrt(head_dim) of the queries against one block of keys; causal: the block holds
    the queries' own positions, so each query sees the keys up to its own only."""
    scores = q @ k.transpose(-2, -1) * scale
    if causal:
        T = q.size(-2)
        future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(diagonal=1)
        scores = scores.masked_fill(future, float("-inf"))
    return scores


def pass_along(tensors: list[torch.Tensor], group: dist.ProcessGroup) -> tuple[list[torch.Tensor], list]:
    """Start sending `tensors` to the next rank of the ring and receiving the previous rank's
    tensors of the same shapes -> (the tensors being received, the pending requests)."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    received = [torch.empty_like(t) for t in tensors]
    ops = [dist.P2POp(dist.isend, t, group=group, group_peer=(rank + 1) % world) for t in tensors]
    ops += [dist.P2POp(dist.irecv, t, group=group, group_peer=(rank - 1) % world) for t in received]
    return received, dist.batch_isend_irecv(ops)


def wait_for(received: list[torch.Tensor], pending: list) -> list[torch.Tensor]:
    for request in pending:
        request.wait()
    return received
