"""The CPU attention path: folding a KV group's query heads into the query axis changes no result."""

from __future__ import annotations

import pytest
import torch

from sglang_stop import attention
from sglang_stop.attention import sdpa_gqa_forward


@pytest.mark.parametrize("q_len,mask_kind", [(1, "bool"), (4, "bool"), (4, "float"), (1, None)])
def test_folded_short_queries_equal_torch_gqa(q_len, mask_kind):
    torch.manual_seed(0)
    q, k, v = torch.randn(5, 9, q_len, 16), torch.randn(5, 3, 30, 16), torch.randn(5, 3, 30, 16)
    mask = None
    if mask_kind is not None:
        mask = torch.rand(5, 1, q_len, 30) > 0.3
        mask[..., -1] = True
        if mask_kind == "float":
            mask = torch.where(mask, 0.0, float("-inf"))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.25, enable_gqa=True)
    out, _ = sdpa_gqa_forward(torch.nn.Module(), q, k, v, mask, scaling=0.25)
    assert out.shape == (5, q_len, 9, 16)
    assert torch.allclose(out, ref.transpose(1, 2), atol=1e-6)


def test_long_queries_are_not_folded(monkeypatch):
    calls = []
    monkeypatch.setattr(attention, "_folded", lambda *a: calls.append(a))
    q, k = torch.randn(1, 9, 8, 16), torch.randn(1, 3, 8, 16)
    out, _ = sdpa_gqa_forward(torch.nn.Module(), q, k, k, torch.ones(1, 1, 8, 8, dtype=torch.bool), scaling=0.25)
    assert calls == [] and out.shape == (1, 8, 9, 16)
