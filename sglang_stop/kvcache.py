"""Build a transformers ``DynamicCache`` around existing KV tensors without copying them.

``DynamicCache(ddp_cache_data=...)`` concatenates each layer onto an empty tensor, i.e. copies the
whole cache once more per forward; for STOP scoring (k new tokens over a long prefix) that copy
costs as much as the forward itself. Tensors handed in are never written in place: an update
concatenates into a new tensor. :func:`cache_staged` serves a forward of a few new tokens over many
branches' separate caches (STOP scoring) without building their padded batch up front.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

Past = Sequence[tuple[torch.Tensor, torch.Tensor]]


def cache_from_past(past: Past) -> DynamicCache:
    layers = []
    for k, v in past:
        layer = DynamicLayer()
        layer.dtype, layer.device = k.dtype, k.device
        layer.keys, layer.values = k, v
        layer.is_initialized = True
        layers.append(layer)
    cache = DynamicCache()
    if layers:
        cache.layers = layers  # type: ignore[assignment]  # DynamicLayer is one of the union
    return cache


def past_of(cache: DynamicCache) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    return tuple((layer.keys, layer.values) for layer in cache.layers)  # type: ignore[misc,union-attr]


class StagedLayer(DynamicLayer):
    """One layer of a single-use cache over many branches' own KV tensors (``[1, H, len_i, D]`` each).

    ``update`` first copies every branch's KV, left-padded, into ``[B, H, width + new, D]`` buffers
    that all layers share (at inference), then the new keys/values after them, and returns those
    buffers: a layer's padded batch is assembled just before its attention reads it, while it is
    still in cache, and no copy of the whole batch is ever allocated (STOP scoring at 16 x 256
    tokens: 380 MB of fresh buffers and a cold re-read before). The cache is therefore unreadable
    after the forward.
    """

    def __init__(self, rows: Past, lens: Sequence[int], k_buf: torch.Tensor, v_buf: torch.Tensor, width: int) -> None:
        super().__init__()
        self.rows, self.lens, self.k_buf, self.v_buf, self.width = rows, lens, k_buf, v_buf, width
        self.dtype, self.device = k_buf.dtype, k_buf.device
        self.keys, self.values = k_buf[..., :width, :], v_buf[..., :width, :]
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        w = self.width
        end = w + key_states.shape[-2]
        if end > self.k_buf.shape[-2]:
            raise ValueError(f"staged cache full: {end} > capacity {self.k_buf.shape[-2]}")
        for i, ((k, v), n) in enumerate(zip(self.rows, self.lens)):
            self.k_buf[i, :, w - n : w] = k[0, :, :n]
            self.v_buf[i, :, w - n : w] = v[0, :, :n]
        self.k_buf[..., w:end, :] = key_states
        self.v_buf[..., w:end, :] = value_states
        self.keys, self.values = self.k_buf[..., :end, :], self.v_buf[..., :end, :]
        return self.keys, self.values


def cache_staged(rows: Sequence[Past], lens: Sequence[int], new_tokens: int) -> DynamicCache:
    """A single-use cache for ``new_tokens`` tokens after each row's first ``lens[i]`` cached positions.

    ``rows[i][layer] = (k, v)`` are read, never written; the batch is ``max(lens)`` wide, left-padded
    (the padding is zero: masked, but never NaN garbage). See :class:`StagedLayer`. With grad enabled
    (training) each layer gets buffers of its own: autograd keeps every layer's keys for the backward.
    """
    width = max(lens)
    k0 = rows[0][0][0]

    def buffers() -> tuple[torch.Tensor, torch.Tensor]:
        k_buf = k0.new_zeros(len(rows), k0.shape[1], width + new_tokens, k0.shape[3])
        return k_buf, torch.zeros_like(k_buf)

    shared = None if torch.is_grad_enabled() else buffers()
    cache = DynamicCache()
    cache.layers = [StagedLayer(tuple(r[layer] for r in rows), lens, *(shared or buffers()), width)  # type: ignore[misc]
                    for layer in range(len(rows[0]))]
    return cache


def expand_rows(cache: DynamicCache, rows: int) -> DynamicCache:
    """A one-row cache (a shared prompt) repeated for ``rows`` rows: what every row then extends."""
    return cache_from_past(
        tuple((k.expand(rows, -1, -1, -1).contiguous(), v.expand(rows, -1, -1, -1).contiguous()) for k, v in past_of(cache))
    )
