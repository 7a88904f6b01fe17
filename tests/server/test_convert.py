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


def _damaged(made, tmp_path, rel: str, data: bytes):
    import shutil

    _, ckpt, _, _ = made
    d = tmp_path / "ckpt"
    shutil.copytree(ckpt, d)
    (d / rel).write_bytes(data)
    return d


@pytest.mark.parametrize(
    "rel, data, fragment",
    [
        ("adapter/classifier/adapter_model.bin", b"\x00garbage", "adapter_model.bin: not a readable torch"),
        ("adapter/classifier/adapter_config.json", b"{not json", "adapter_config.json: not valid JSON"),
        ("adapter/classifier/adapter_config.json", b'{"r": "8", "lora_alpha": 16, "target_modules": ["q_proj"]}',
         "adapter_config.json: r: expected a positive number"),
        ("assess_token_embedding.pth", b"PK\x03\x04 truncated", "assess_token_embedding.pth: not a readable torch"),
        ("classifier_head.pth", b"", "classifier_head.pth: not a readable torch"),
        ("assess_token_config.json", b"[1, 2]", "assess_token_config.json"),
    ],
)
def test_garbage_checkpoint_files_are_one_line_naming_the_file(made, tmp_path, rel, data, fragment):
    model = made[0]
    ckpt = _damaged(made, tmp_path, rel, data)
    out = tmp_path / "out"
    with pytest.raises(UserError) as e:
        convert_checkpoint(ckpt, model, out, check_weights=False)
    msg = str(e.value)
    assert fragment in msg and "\n" not in msg, msg
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # nothing half-written


def test_head_of_the_wrong_shape_is_refused(made, tmp_path):
    model = made[0]
    ckpt = _damaged(made, tmp_path, "classifier_head.pth", b"")
    torch.save({"weight": torch.zeros(2, tiny.HIDDEN + 1), "bias": torch.zeros(2)}, ckpt / "classifier_head.pth")
    with pytest.raises(UserError, match=r"classifier_head.pth: head weight \(2, 65\)"):
        convert_checkpoint(ckpt, model, tmp_path / "out", check_weights=False)


def test_output_is_written_atomically_and_never_replaces_other_dirs(made, tmp_path):
    model, ckpt, _, cfg = made
    out = tmp_path / "adapter"
    assert convert_checkpoint(ckpt, model, out, check_weights=False) == cfg
    before = (out / "adapter_model.safetensors").read_bytes()
    assert convert_checkpoint(ckpt, model, out, check_weights=False, num_stop_tokens=2).num_stop_tokens == 2
    assert load_stop_adapter(out)[0].num_stop_tokens == 2 and (out / "adapter_model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no temp or old dirs left
    precious = tmp_path / "model-copy"
    precious.mkdir()
    (precious / "config.json").write_text("{}")
    with pytest.raises(UserError, match="not a converted STOP adapter; refusing to replace it"):
        convert_checkpoint(ckpt, model, precious, check_weights=False)
    assert (precious / "config.json").read_text() == "{}"


@pytest.mark.parametrize("rel, data, fragment", [
    ("stop/config.json", b"{", "config.json: "),
    ("stop/head.safetensors", b"junk", "head.safetensors: not a readable safetensors"),
])
def test_server_side_load_of_a_damaged_adapter_is_a_user_error(made, tmp_path, rel, data, fragment):
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(made[2], adapter)
    (adapter / rel).write_bytes(data)
    with pytest.raises(UserError, match=fragment):
        load_stop_adapter(adapter)


def test_cli_garbage_is_one_error_line(made, tmp_path):
    import subprocess
    import sys

    model = made[0]
    ckpt = _damaged(made, tmp_path, "assess_token_embedding.pth", b"garbage")
    r = subprocess.run([sys.executable, "-m", "sglang_stop.srt.convert", str(ckpt), str(model), str(tmp_path / "o"),
                        "--no-weights-check"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len([ln for ln in lines if ln.startswith("error:")]) == 1 and "assess_token_embedding.pth" in r.stderr
