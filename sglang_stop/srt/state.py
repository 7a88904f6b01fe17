"""Per-process registry of the STOP adapters a server has loaded (path -> config, head) and their ids.

Kept apart from the hooks so the HTTP process (which sees adapters through sglang's LoRA registry) and
the scheduler (which sees them as the LoRA manager loads them) share one small, lock-protected table.

The scheduler also keeps one persistent boolean [STOP] mask per device (``logits_mask``): built once when
the LoRA manager is (before any CUDA graph is captured) and updated IN PLACE when an adapter loads, so
the forward never builds an index from a Python list (a host-to-device copy, illegal inside CUDA-graph
capture and a stall for the overlap scheduler) and a captured graph's replays read the same memory.
"""

from __future__ import annotations

import hashlib
import os
import secrets
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


KEY_ENV = "SGLANG_STOP_INTERNAL_KEY"
SECRET_ENV = "SGLANG_STOP_SECRET"


def internal_key() -> str:
    """The key marking /stop/score's own requests. From ``SGLANG_STOP_SECRET`` when set (hashed, so the
    secret itself never appears in a request): every node of a multi-node launch must set the same one,
    since each node's launcher would otherwise draw its own and the TP ranks' radix caches would diverge.
    Else a per-launch random key that the launcher's child processes inherit through the env."""
    shared = os.environ.get(SECRET_ENV)
    if shared:
        return "sglang-stop:" + hashlib.sha256(shared.encode()).hexdigest()[:32]
    key = os.environ.get(KEY_ENV)
    if not key:
        key = os.environ[KEY_ENV] = "sglang-stop:" + secrets.token_hex(16)
    return key


def server_problem(args: Any) -> str | None:
    """Why ``args`` (sglang's ServerArgs) cannot serve /stop/score correctly, naming the flag; None if it can."""
    page = int(getattr(args, "page_size", None) or 1)
    if page > 1:
        return (f"--page-size {page}: STOP scoring needs --page-size 1 (a cached prefix is cut to a page boundary, "
                "so the prefix tail would be recomputed with the STOP LoRA and the score would be wrong)")
    if getattr(args, "disable_radix_cache", False):
        return ("--disable-radix-cache: STOP scoring reuses the base prefix's KV from the radix cache; "
                "launch without --disable-radix-cache")
    if not (getattr(args, "enable_return_hidden_states", False)
            or getattr(args, "return_hidden_states_mode", None) in ("last", "full")):
        return ("--return-hidden-states-mode: STOP scoring reads the last [STOP] token's hidden state; "
                "launch with --return-hidden-states-mode last")
    if getattr(args, "enable_return_aux_hidden_states", False):
        return ("--enable-return-aux-hidden-states: the returned hidden state would be the packed aux layers, "
                "not the final-norm state the STOP head reads; launch without it")
    slots = getattr(args, "max_loras_per_batch", None)
    if slots is not None and int(slots) < 2:
        return (f"--max-loras-per-batch {slots}: needs >= 2 (the base model takes one slot, the STOP adapter "
                "another)")
    nodes = int(getattr(args, "nnodes", 1) or 1)
    if nodes > 1 and not os.environ.get(SECRET_ENV):
        return (f"{SECRET_ENV}: --nnodes {nodes} needs one shared secret on every node (export "
                f"{SECRET_ENV}=<the same random string> before launching each node)")
    return None
