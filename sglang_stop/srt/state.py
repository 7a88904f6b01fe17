"""Per-process registry of the STOP adapters a server has loaded (path -> config, head) and their ids.

Kept apart from the hooks so the HTTP process (which sees adapters through sglang's LoRA registry) and
the scheduler (which sees them as the LoRA manager loads them) share one small, lock-protected table.
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
    return entry


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
