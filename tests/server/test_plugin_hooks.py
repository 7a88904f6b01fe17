"""The plugin's hooks as plain functions (no server): namespace only for our own scoring requests,
[STOP] logits masked, [STOP] ids refused on ordinary requests."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import tiny
from sglang_stop.srt import plugin, state
from sglang_stop.srt.convert import convert_checkpoint


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    d = tmp_path_factory.mktemp("hooks")
    model = tiny.make_model(d / "model")
    cfg = convert_checkpoint(tiny.make_stop_checkpoint(model, d / "ckpt"), model, d / "adapter")
    state.note_adapter_path(str(d / "adapter"))
    return d / "adapter", cfg


def _fake_init(self, *args, lora_id=None, extra_key=None, **kwargs):
    self.lora_id = lora_id
    self.extra_key = (extra_key or "") + lora_id if lora_id else extra_key
    self.skip_radix_cache_insert = False


def test_only_internal_scoring_requests_share_the_base_namespace():
    req = SimpleNamespace()
    plugin._req_init(_fake_init, req, lora_id="L1", extra_key=plugin.internal_key())
    assert req.extra_key is None and req.skip_radix_cache_insert
    user = SimpleNamespace()
    plugin._req_init(_fake_init, user, lora_id="L1", extra_key="guess")
    assert user.extra_key == "guessL1" and not user.skip_radix_cache_insert
    base = SimpleNamespace()
    plugin._req_init(_fake_init, base, lora_id=None, extra_key=plugin.internal_key())
    assert base.extra_key == plugin.internal_key()  # no adapter: nothing to drop


def test_stop_logits_masked_and_ids_refused(adapter):
    _, cfg = adapter
    sid = cfg.stop_token_id
    out = SimpleNamespace(next_token_logits=torch.zeros(2, cfg.vocab_size))
    plugin._mask_stop_logits(out)
    assert torch.isinf(out.next_token_logits[:, sid]).all() and out.next_token_logits[:, 0].eq(0).all()
    tm = SimpleNamespace(lora_registry=None)
    with pytest.raises(ValueError, match="STOP"):
        plugin._validate(tm, SimpleNamespace(extra_key=None), [1, 2, sid])
    plugin._validate(tm, SimpleNamespace(extra_key=None), [1, 2, 3])
    plugin._validate(tm, SimpleNamespace(extra_key=plugin.internal_key()), [1, sid])
