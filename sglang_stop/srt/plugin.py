"""The SGLang server plugin (entry point ``sglang.srt.plugins: sglang_stop``), for STOCK sglang 0.5.23.

``register()`` runs in every server process (launcher/HTTP, scheduler, detokenizer) and installs:

* ``Req.__init__`` (AROUND, scheduler): a scoring request carries a secret key in ``extra_key``;
  for it the STOP adapter's ``lora_id`` is dropped from ``extra_key`` so ``prefix + [STOP]*k`` matches
  the BASE model's cached prefix (LoRA then runs on the k new tokens only, as STOP was trained), and
  ``skip_radix_cache_insert`` is set so LoRA-computed KV never enters the base namespace. Every TP rank
  must recognise the same key, so multi-node launches share ``SGLANG_STOP_SECRET`` (see ``internal_key``).
* ``LoRAManager.__init__`` (AFTER, scheduler): makes the persistent [STOP] logits mask on the model's
  device, before CUDA graphs are captured (state.py).
* ``LoRAManager._load_lora_adapter`` (AROUND, scheduler): refuses a STOP adapter on a server whose flags
  would make its scores wrong (``server_problem``: page size, radix cache, hidden states, LoRA slots,
  multi-node secret) -- at start-up this stops the launch naming the flag -- and records the reserved
  [STOP] id of each STOP adapter loaded (start-up and /load_lora_adapter), updating the mask in place.
* ``LogitsProcessor.forward`` (AFTER, scheduler): ``masked_fill_`` of the [STOP] columns with -inf from
  that device mask, so no request can ever sample them, on eager batches and CUDA-graph replays alike.
* ``TokenizerManager._validate_one_request`` (BEFORE, HTTP process): a request whose input ids hold a
  [STOP] id is refused with 400 unless it is our own scoring request; text can never produce the id
  (it is a padded embedding row with no tokenizer string).
* ``POST /stop/score`` and ``GET /stop/adapters`` on sglang's FastAPI app (HTTP process only).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from typing import Any

import torch

from sglang_stop.srt import state
from sglang_stop.errors import UserError
from sglang_stop.srt.convert import is_stop_adapter, load_stop_adapter
from sglang_stop.srt.state import KEY_ENV, SECRET_ENV, internal_key, server_problem  # noqa: F401 - re-exported

logger = logging.getLogger(__name__)

_TARGETS = {
    "req_init": "sglang.srt.managers.schedule_batch.Req.__init__",
    "lora_init": "sglang.srt.lora.lora_manager.LoRAManager.__init__",
    "lora_load": "sglang.srt.lora.lora_manager.LoRAManager._load_lora_adapter",  # start-up + /load_lora_adapter
    "logits": "sglang.srt.layers.logits_processor.LogitsProcessor.forward",
    "validate": "sglang.srt.managers.tokenizer_manager.TokenizerManager._validate_one_request",
}


def _server_args() -> Any:
    try:
        from sglang.srt.runtime_context import get_server_args

        return get_server_args()
    except Exception:  # noqa: BLE001 - no runtime context (a test, another sglang): the route checks later
        return None


def _req_init(original, self, *args: Any, **kwargs: Any) -> None:
    original(self, *args, **kwargs)
    if self.lora_id is not None and kwargs.get("extra_key") == internal_key():
        self.extra_key = None  # the base model's namespace (our commits send no extra_key)
        self.skip_radix_cache_insert = True


def _after_lora_manager_init(result: Any, manager: Any, *args: Any, **kwargs: Any) -> Any:
    state.ensure_logits_mask(manager.device, int(manager.base_hf_config.vocab_size))
    return result


def _lora_load(original, manager: Any, lora_ref: Any, *args: Any, **kwargs: Any) -> Any:
    path = getattr(lora_ref, "lora_path", None)
    if path and is_stop_adapter(path):
        args_ = _server_args()
        problem = server_problem(args_) if args_ is not None else None
        if not problem:
            try:
                load_stop_adapter(path)  # garbage side files: a refused load, not a dead scheduler
            except UserError as e:
                problem = str(e)
        if problem:
            logger.error("sglang_stop: STOP adapter %s refused: %s", lora_ref.lora_name, problem)
            return manager.create_lora_update_result(success=False, error_message=problem)
    result = original(manager, lora_ref, *args, **kwargs)
    if getattr(result, "success", True) and path:
        state.note_adapter_path(path)
    return result


def _mask_stop_logits(result: Any, *args: Any, **kwargs: Any) -> Any:
    """-inf on the [STOP] columns from the device mask: no host data, same kernels on every graph replay."""
    logits = getattr(result, "next_token_logits", None)
    if logits is None:
        return result
    mask = state.logits_mask(logits.device)
    if mask is None:
        if not state.stop_token_ids() or (logits.is_cuda and torch.cuda.is_current_stream_capturing()):
            return result
        mask = state.ensure_logits_mask(logits.device, logits.shape[-1])  # no LoRA-manager hook ran: eager only
    n = min(mask.shape[0], logits.shape[-1])
    logits[..., :n].masked_fill_(mask[:n], float("-inf"))
    return result


def _validate(self: Any, obj: Any, input_ids: Any, *args: Any, **kwargs: Any) -> None:
    if not input_ids or getattr(obj, "extra_key", None) == internal_key():
        return None
    state.refresh_from_registry(self)
    ids = state.stop_token_ids()
    if ids and not ids.isdisjoint(input_ids):
        raise ValueError("input_ids contain the reserved [STOP] token id; it is only used by POST /stop/score")
    return None


def register() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    internal_key()
    HookRegistry.register(_TARGETS["req_init"], _req_init, HookType.AROUND)
    HookRegistry.register(_TARGETS["lora_init"], _after_lora_manager_init, HookType.AFTER)
    HookRegistry.register(_TARGETS["lora_load"], _lora_load, HookType.AROUND)
    HookRegistry.register(_TARGETS["logits"], _mask_stop_logits, HookType.AFTER)
    HookRegistry.register(_TARGETS["validate"], _validate, HookType.BEFORE)
    if multiprocessing.parent_process() is None:  # the launcher, which serves HTTP
        from sglang_stop.srt.routes import add_routes

        add_routes()
    logger.info("sglang_stop plugin registered (pid %d)", os.getpid())
