"""The converter, checked without a server: the converted adapter, loaded by PEFT and fed the reserved
token id, reproduces STOP's two-stage scoring (the [STOP] vector fed as inputs_embeds)."""

from __future__ import annotations

import json

import pytest
import torch

import tiny
from sglang_stop.errors import UserError
from sglang_stop.srt.convert import convert_checkpoint, load_stop_adapter


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = tmp_path_factory.mktemp("convert")
    model = tiny.make_model(d / "model")
    ckpt = tiny.make_stop_checkpoint(model, d / "ckpt")
    cfg = convert_checkpoint(ckpt, model, d / "adapter")
    return model, ckpt, d / "adapter", cfg


def test_layout_and_reserved_id(made):
    model, _, adapter, cfg = made
    from transformers import AutoTokenizer

    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    assert len(AutoTokenizer.from_pretrained(model)) <= cfg.stop_token_id < vocab
    assert cfg.num_stop_tokens == tiny.K_STOP
    acfg = json.loads((adapter / "adapter_config.json").read_text())
    assert "embed_tokens" in acfg["target_modules"]
    assert sorted(p.name for p in adapter.glob("*.safetensors")) == ["adapter_model.safetensors"]
    c2, w, b = load_stop_adapter(adapter)
    assert c2 == cfg and w.shape == (2, tiny.HIDDEN) and b.shape == (2,)


@torch.no_grad()
def test_converted_adapter_matches_reference(made):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, ckpt, adapter, cfg = made
    ref = tiny.ReferenceScorer(model, ckpt)
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32), adapter)
    _, w, b = load_stop_adapter(adapter)
    for ids in ([5, 17, 33, 2, 90], list(range(40, 80))):
        with peft_model.disable_adapter():
            past = peft_model(input_ids=torch.tensor([ids]), use_cache=True).past_key_values
        stop = torch.tensor([[cfg.stop_token_id] * cfg.num_stop_tokens])
        h = peft_model(input_ids=stop, past_key_values=past, output_hidden_states=True).hidden_states[-1][0, -1]
        got = float(torch.softmax(w @ h + b, -1)[1])
        assert abs(got - ref.score(ids)) < 1e-5


def test_bad_checkpoint_is_a_user_error(made, tmp_path):
    model, _, _, _ = made
    with pytest.raises(UserError, match="adapter_config.json"):
        convert_checkpoint(tmp_path, model, tmp_path / "out")
