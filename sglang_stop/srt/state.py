"""Per-process registry of the STOP adapters a server has loaded (path -> config, head) and their ids.

Kept apart from the hooks so the HTTP process (which sees adapters through sglang's LoRA registry) and
the scheduler (which sees them as the LoRA manager loads them) share one small, lock-protected table.

The scheduler also keeps one persistent boolean [STOP] mask per device (``logits_mask``): built once when
the LoRA manager is (before any CUDA graph is captured) and updated IN PLACE when an adapter loads, so
the forward never builds an index from a Python list (a host-to-device copy, illegal inside CUDA-graph
capture and a stall for the overlap scheduler) and a captured graph's replays read the same memory.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch

from sglang_stop.srt.convert import StopAdapterConfig, is_stop_adapter, load_stop_adapter

_lock = threading.Lock()
_adapters: dict[str, tuple[StopAdapterConfig, torch.Tensor, torch.Tensor]] = {}
_not_stop: set[str] = set()
_ids: frozenset[int] = frozenset()
_masks: dict[torch.device, torch.Tensor] = {}  # device -> bool [vocab]; never replaced once made


def note_adapter_path(path: str) -> tuple[StopAdapterConfig, torch.Tensor, torch.Tensor] | None:
    """Load (once) the STOP side files of an adapter directory; None if it is an ordinary LoRA."""
    global _ids
    key = str(Path(path))
    with _lock:
        if key in _adapters:
            return _adapters[key]
        if key in _not_stop:
            return None
    if not is_stop_adapter(key):
        with _lock:
            _not_stop.add(key)
        return None
    entry = load_stop_adapter(key)
    with _lock:
        _adapters[key] = entry
        _ids = frozenset(cfg.stop_token_id for cfg, _, _ in _adapters.values())
        for mask in _masks.values():
            _mark(mask, _ids)
    return entry


def _mark(mask: torch.Tensor, ids: frozenset[int]) -> None:
    """Set ``ids`` in ``mask`` in place: one fill kernel per id on the mask's own device, no host tensor."""
    for i in ids:
        if i < mask.shape[0]:
            mask[i : i + 1].fill_(True)


def ensure_logits_mask(device: torch.device | str, size: int) -> torch.Tensor:
    """The persistent mask of ``device`` (made on first call with ``size`` columns, holding the ids known
    so far). Call it outside the forward: at LoRA-manager init, before CUDA graphs are captured."""
    dev = torch.device(device)
    with _lock:
        mask = _masks.get(dev)
        if mask is None:
            mask = _masks[dev] = torch.zeros(int(size), dtype=torch.bool, device=dev)
            _mark(mask, _ids)
        return mask


def logits_mask(device: torch.device) -> torch.Tensor | None:
    """The hot-path lookup: a dict read, no allocation, no copy."""
    return _masks.get(device)


def stop_token_ids() -> frozenset[int]:
    return _ids


def refresh_from_registry(tokenizer_manager: Any) -> dict[str, Any]:
    """name -> LoRARef of every adapter the server knows; notes the STOP ones."""
    registry = getattr(tokenizer_manager, "lora_registry", None)
    refs = registry.get_all_adapters() if registry is not None else {}
    for ref in refs.values():
        if ref.lora_path:
            note_adapter_path(ref.lora_path)
    return refs
