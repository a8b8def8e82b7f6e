"""Packing: several documents in one row train exactly as if each had its own row."""

from __future__ import annotations

import pytest
import torch

from groklm.model import GPT, GPTConfig
from groklm.model.gpt import packing_layout


def test_layout_restarts_positions_and_blocks_attention_across_documents():
    positions, mask = packing_layout(torch.tensor([[0, 0, 0, 1, 1, 2]]))
    assert positions.tolist() == [[0, 1, 2, 0, 1, 0]]
    allowed = mask[0, 0].int().tolist()
    assert allowed[4] == [0, 0, 0, 1, 1, 0]  # 2nd token of doc 1 sees doc 1 only, up to itself
    assert allowed[5] == [0, 0, 0, 0, 0, 1]


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope"])
@pytest.mark.parametrize("explicit", [False, True])
def test_packed_row_equals_documents_one_by_one(pos, explicit):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, pos=pos)).eval()
    docs = [torch.randint(0, 50, (1, n)) for n in (5, 3, 6)]
    packed = torch.cat(docs, dim=1)
    doc_ids = torch.cat([torch.full((1, d.size(1)), i) for i, d in enumerate(docs)], dim=1)
    if explicit:  # the explicit attention path, with the same mask, must agree too
        for block in model.blocks:
            block.attn.forward = _explicit(block.attn)
    with torch.no_grad():
        together, _ = model(packed, doc_ids=doc_ids)
        apart = torch.cat([model(d)[0] for d in docs], dim=1)
    assert torch.allclose(together, apart, atol=1e-5)


def _explicit(attn):
    plain = attn.forward
    return lambda x, positions=None, mask=None, cache=None: plain(x, positions, mask, return_weights=True)[0]


def test_packed_loss_ignores_masked_targets():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16))
    idx = torch.randint(0, 20, (1, 8))
    targets = idx.clone()
    targets[0, :4] = -100
    _, loss = model(idx, targets, doc_ids=torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]]))
    logits, _ = model(idx, doc_ids=torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]]))
    expected = torch.nn.functional.cross_entropy(logits[0, 4:], idx[0, 4:])
    assert torch.allclose(loss, expected)
