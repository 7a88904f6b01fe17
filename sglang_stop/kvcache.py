"""Build a transformers ``DynamicCache`` around existing KV tensors without copying them.

``DynamicCache(ddp_cache_data=...)`` concatenates each layer onto an empty tensor, i.e. copies the
whole cache once more per forward; for STOP scoring (k new tokens over a long prefix) that copy
costs as much as the forward itself. Tensors handed in are never written in place: an update
concatenates into a new tensor.
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
        cache.layers = layers
    return cache


def past_of(cache: DynamicCache) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    return tuple((layer.keys, layer.values) for layer in cache.layers)
