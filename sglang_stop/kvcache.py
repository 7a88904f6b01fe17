"""Build a transformers ``DynamicCache`` around existing KV tensors without copying them.

``DynamicCache(ddp_cache_data=...)`` concatenates each layer onto an empty tensor, i.e. copies the
whole cache once more per forward; for STOP scoring (k new tokens over a long prefix) that copy
costs as much as the forward itself. Tensors handed in are never written in place: an update
concatenates into a new tensor. :func:`cache_with_room` goes one step further for buffers that
were allocated with room for the new tokens: updates write into that room, nothing is concatenated.
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


class ReservedLayer(DynamicLayer):
    """A cache layer over preallocated ``[B, H, capacity, D]`` buffers whose first ``filled``
    positions hold the past: ``update`` writes the new keys/values in place and returns views."""

    def __init__(self, k_buf: torch.Tensor, v_buf: torch.Tensor, filled: int) -> None:
        super().__init__()
        self.k_buf, self.v_buf, self.filled = k_buf, v_buf, filled
        self.dtype, self.device = k_buf.dtype, k_buf.device
        self.keys, self.values = k_buf[..., :filled, :], v_buf[..., :filled, :]
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.filled + key_states.shape[-2]
        if end > self.k_buf.shape[-2]:
            raise ValueError(f"reserved cache full: {end} > capacity {self.k_buf.shape[-2]}")
        self.k_buf[..., self.filled : end, :] = key_states
        self.v_buf[..., self.filled : end, :] = value_states
        self.filled = end
        self.keys, self.values = self.k_buf[..., :end, :], self.v_buf[..., :end, :]
        return self.keys, self.values


def cache_with_room(buffers: Past, filled: int) -> DynamicCache:
    """A cache over ``(k_buf, v_buf)`` per layer, the first ``filled`` positions being the past."""
    cache = DynamicCache()
    cache.layers = [ReservedLayer(k, v, filled) for k, v in buffers]
    return cache


def expand_rows(cache: DynamicCache, rows: int) -> DynamicCache:
    """A one-row cache (a shared prompt) repeated for ``rows`` rows: what every row then extends."""
    return cache_from_past(
        tuple((k.expand(rows, -1, -1, -1).contiguous(), v.expand(rows, -1, -1, -1).contiguous()) for k, v in past_of(cache))
    )
