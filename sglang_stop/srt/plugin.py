"""The SGLang server plugin (entry point ``sglang.srt.plugins: sglang_stop``), for STOCK sglang 0.5.23.

``register()`` runs in every server process (launcher/HTTP, scheduler, detokenizer) and installs:

* ``Req.__init__`` (AROUND, scheduler): a scoring request carries a per-launch secret in ``extra_key``;
  for it the STOP adapter's ``lora_id`` is dropped from ``extra_key`` so ``prefix + [STOP]*k`` matches
  the BASE model's cached prefix (LoRA then runs on the k new tokens only, as STOP was trained), and
  ``skip_radix_cache_insert`` is set so LoRA-computed KV never enters the base namespace.
* ``LoRAManager._load_lora_adapter`` (AFTER, scheduler): notes the reserved [STOP] id of each STOP
  adapter loaded (at start-up or via /load_lora_adapter).
* ``LogitsProcessor.forward`` (AFTER, scheduler): the [STOP] ids get -inf logits, so no request can
  ever sample them.
* ``TokenizerManager._validate_one_request`` (BEFORE, HTTP process): a request whose input ids hold a
  [STOP] id is refused with 400 unless it is our own scoring request; text can never produce the id
  (it is a padded embedding row with no tokenizer string).
* ``POST /stop/score`` and ``GET /stop/adapters`` on sglang's FastAPI app (HTTP process only).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
from typing import Any

from sglang_stop.srt import state

logger = logging.getLogger(__name__)

KEY_ENV = "SGLANG_STOP_INTERNAL_KEY"
_TARGETS = {
    "req_init": "sglang.srt.managers.schedule_batch.Req.__init__",
    "lora_load": "sglang.srt.lora.lora_manager.LoRAManager._load_lora_adapter",  # start-up + /load_lora_adapter
    "logits": "sglang.srt.layers.logits_processor.LogitsProcessor.forward",
    "validate": "sglang.srt.managers.tokenizer_manager.TokenizerManager._validate_one_request",
}


def internal_key() -> str:
    """Per-launch secret marking /stop/score's own requests; children inherit it through the env."""
    key = os.environ.get(KEY_ENV)
    if not key:
        key = os.environ[KEY_ENV] = "sglang-stop:" + secrets.token_hex(16)
    return key


def _req_init(original, self, *args: Any, **kwargs: Any) -> None:
    original(self, *args, **kwargs)
    if self.lora_id is not None and kwargs.get("extra_key") == internal_key():
        self.extra_key = None  # the base model's namespace (our commits send no extra_key)
        self.skip_radix_cache_insert = True


def _after_lora_load(result: Any, manager: Any, lora_ref: Any, *args: Any, **kwargs: Any) -> Any:
    if getattr(result, "success", True) and lora_ref.lora_path:
        state.note_adapter_path(lora_ref.lora_path)
    return result


def _mask_stop_logits(result: Any, *args: Any, **kwargs: Any) -> Any:
    logits = getattr(result, "next_token_logits", None)
    ids = state.stop_token_ids()
    if ids and logits is not None:
        cols = [i for i in ids if i < logits.shape[-1]]
        if cols:
            logits[..., cols] = float("-inf")
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
    HookRegistry.register(_TARGETS["lora_load"], _after_lora_load, HookType.AFTER)
    HookRegistry.register(_TARGETS["logits"], _mask_stop_logits, HookType.AFTER)
    HookRegistry.register(_TARGETS["validate"], _validate, HookType.BEFORE)
    if multiprocessing.parent_process() is None:  # the launcher, which serves HTTP
        from sglang_stop.srt.routes import add_routes

        add_routes()
    logger.info("sglang_stop plugin registered (pid %d)", os.getpid())
