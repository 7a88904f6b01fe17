"""STOP checkpoints know their base: identity recorded and checked (loader and converter share the check),
every damaged file is one UserError naming it (through ``StopScorer.prepare``, before any decode), and
the directory gets the umask's modes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sglang_stop.errors import UserError
from sglang_stop.scorers import make_scorer
from sglang_stop.scorers.stop import (
    BaseModelInfo,
    StopNet,
    StopNetConfig,
    check_base_model,
    load_checkpoint,
    save_checkpoint,
)


def tiny(layers: int = 2, kv_heads: int = 2, hidden: int = 32, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=40, hidden_size=hidden, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def net_for(model: LlamaForCausalLM, r: int = 4) -> StopNet:
    return StopNet(StopNetConfig(num_assess_tokens=2, lora_r=r, lora_alpha=8, lora_dropout=0.0), model)


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    return tiny()


@pytest.fixture(scope="module")
def ckpt(model, tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("c") / "ckpt", net_for(model), model)


def warnings(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("warning:")]


def test_identity_recorded_and_other_weights_refused(model, ckpt, capsys):
    meta = json.loads((ckpt / "assess_token_config.json").read_text())["base_model"]
    assert meta["weights_hash"] == BaseModelInfo.of(model).weights_hash and meta["dtype"] == "float32"
    assert meta["num_key_value_heads"] == 2
    load_checkpoint(ckpt, model)
    assert warnings(capsys.readouterr().err) == []
    other = tiny(seed=5)  # same shapes, other weights
    with pytest.raises(UserError, match="other weights") as e:
        load_checkpoint(ckpt, other)
    assert meta["weights_hash"] in str(e.value) and BaseModelInfo.of(other).weights_hash in str(e.value)
    with pytest.raises(UserError, match="num_key_value_heads is 2 but the loaded model has 4"):
        load_checkpoint(ckpt, tiny(kv_heads=4))
    with pytest.raises(UserError, match="num_hidden_layers"):
        load_checkpoint(ckpt, tiny(layers=3))


def test_authors_file_without_base_loads_with_one_warning(model, ckpt, tmp_path, capsys):
    d = shutil.copytree(ckpt, tmp_path / "authors")
    f = d / "assess_token_config.json"
    meta = json.loads(f.read_text())
    del meta["base_model"]
    f.write_text(json.dumps(meta))
    load_checkpoint(d, model)
    w = warnings(capsys.readouterr().err)
    assert len(w) == 1 and "records no base model" in w[0] and "cannot verify" in w[0]


def test_hash_is_compared_whatever_the_load_dtype():
    rec = BaseModelInfo(hidden_size=8, num_hidden_layers=2, vocab_size=10, name="m", weights_hash="aa", dtype="float32")
    check_base_model(Path("x"), rec, rec.model_copy(update={"dtype": "bfloat16"}))  # same weights, other dtype
    with pytest.raises(UserError, match="weights aa"):
        check_base_model(Path("x"), rec, rec.model_copy(update={"weights_hash": "bb"}))
    with pytest.raises(UserError, match="weights aa"):
        check_base_model(Path("x"), rec, rec.model_copy(update={"weights_hash": "bb", "dtype": "bfloat16"}))


def test_weights_hash_does_not_depend_on_the_load_dtype():
    from sglang_stop.models import load_model, weights_hash
    from sglang_stop.testbed import asset_dir

    hashes = {weights_hash(load_model(asset_dir(), device="cpu", dtype=d)[0]) for d in ("float32", "bfloat16")}
    assert len(hashes) == 1


def test_committed_testbed_checkpoint_verifies_without_warning(capsys):
    from sglang_stop.models import load_model
    from sglang_stop.testbed import asset_dir, stop_asset_dir

    m, _ = load_model(asset_dir(), device="cpu", dtype="float32")
    capsys.readouterr()
    load_checkpoint(stop_asset_dir(), m)
    assert warnings(capsys.readouterr().err) == []


def test_checkpoint_dir_and_files_get_umask_modes(model, tmp_path):
    old = os.umask(0o027)
    try:
        dest = save_checkpoint(tmp_path / "modes", net_for(model), model)
    finally:
        os.umask(old)
    paths = [dest, *dest.rglob("*")]
    assert len(paths) > 4
    for p in paths:
        want = 0o750 if p.is_dir() else 0o640
        assert p.stat().st_mode & 0o777 == want, (p, oct(p.stat().st_mode))


# --- damaged checkpoints: one UserError naming the file, from prepare() (before decoding) ----------

def _rewrite(name: str, data: bytes | None):
    def f(d: Path) -> None:
        if data is None:
            (d / name).unlink()
        else:
            (d / name).write_bytes(data)
    return f


def _truncate(name: str):
    def f(d: Path) -> None:
        raw = (d / name).read_bytes()
        (d / name).write_bytes(raw[: len(raw) // 2])
    return f


def _torch_save(name: str, obj):
    return lambda d: torch.save(obj, d / name)


def _edit_json(name: str, **kv):
    def f(d: Path) -> None:
        obj = json.loads((d / name).read_text())
        for k, v in kv.items():
            obj[k] = v
        (d / name).write_text(json.dumps(obj))
    return f


def _empty(d: Path) -> None:
    shutil.rmtree(d)
    d.mkdir()


ADAPTER = "adapter/classifier/adapter_model.safetensors"
DAMAGE = {
    "missing-dir": (lambda d: shutil.rmtree(d), "not a directory"),
    "empty-dir": (_empty, "empty directory"),
    "config-garbage": (_rewrite("assess_token_config.json", b"\x00\xffnot json"), "assess_token_config.json"),
    "head-missing": (_rewrite("classifier_head.pth", None), "classifier_head.pth: missing"),
    "head-truncated": (_truncate("classifier_head.pth"), "classifier_head.pth: not a readable torch file"),
    "head-garbage": (_rewrite("classifier_head.pth", b"garbage" * 20), "classifier_head.pth: not a readable"),
    "head-hidden": (_torch_save("classifier_head.pth", torch.nn.Linear(16, 2).state_dict()), "expected (2, 32)"),
    "head-not-dict": (_torch_save("classifier_head.pth", [1, 2]), "classifier_head.pth: expected a Linear"),
    "emb-missing": (_rewrite("assess_token_embedding.pth", None), "assess_token_embedding.pth: missing"),
    "emb-truncated": (_truncate("assess_token_embedding.pth"), "assess_token_embedding.pth: not a readable"),
    "emb-hidden": (_torch_save("assess_token_embedding.pth", {"input_embedding": torch.zeros(16)}), "16 values"),
    "adapter-truncated": (_truncate(ADAPTER), "adapter_model.safetensors: not a readable safetensors"),
    "adapter-garbage": (_rewrite(ADAPTER, b"\xff" * 64), "adapter_model.safetensors: not a readable"),
    "adapter-rank": (_edit_json("adapter/classifier/adapter_config.json", r=8), "LoRA shape mismatch"),
    "adapter-config-garbage": (_rewrite("adapter/classifier/adapter_config.json", b"{"), "adapter_config.json: not valid JSON"),
    "adapter-targets": (_edit_json("adapter/classifier/adapter_config.json", target_modules=["nope"]), "no Linear layer"),
    "mode-unknown": (_edit_json("assess_token_config.json", mode="both"), "mode"),
}


class KVBackend:
    """Enough of a backend for prepare(): a model and prefix-KV access."""

    def __init__(self, model):
        self.model = model

    def with_prefix_kv(self, handles, fn):  # pragma: no cover - prepare never scores
        raise AssertionError("prepare must not decode")


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_checkpoint_is_one_user_error_at_prepare(case, model, ckpt, tmp_path):
    d = shutil.copytree(ckpt, tmp_path / "bad")
    damage, fragment = DAMAGE[case]
    damage(d)
    scorer = make_scorer("stop", {"checkpoint": str(d)})
    with pytest.raises(UserError) as e:
        scorer.prepare(KVBackend(model))
    msg = str(e.value)
    assert fragment in msg and "\n" not in msg, msg


def test_prepare_without_checkpoint_and_on_a_server(model, ckpt, capsys):
    with pytest.raises(UserError, match="scorer.options.checkpoint"):
        make_scorer("stop", {}).prepare(KVBackend(model))

    class Server:
        def stop_score(self, handles):  # pragma: no cover
            return []

    make_scorer("stop", {"checkpoint": str(ckpt)}).prepare(Server())
    assert "ignored against a server" in capsys.readouterr().err


# --- the converter checks the base with the same function -----------------------------------------

@pytest.fixture(scope="module")
def base_dir(model, tmp_path_factory) -> Path:
    from sglang_stop.testbed.tokenizer import build_tokenizer

    d = tmp_path_factory.mktemp("base") / "tiny"
    model.save_pretrained(d)
    build_tokenizer().save_pretrained(d)  # 20 tokens < vocab 40: padded rows for the [STOP] id
    return d


def test_convert_refuses_other_base_and_prints_json(model, ckpt, base_dir, tmp_path, capsys):
    from sglang_stop.srt.convert import main
    from sglang_stop.testbed.tokenizer import build_tokenizer

    for i, (other, fragment) in enumerate([(tiny(layers=3), "num_hidden_layers is 2 but the loaded model has 3"),
                                           (tiny(kv_heads=4), "num_key_value_heads"),
                                           (tiny(seed=5), "other weights")]):
        od = tmp_path / f"other{i}"
        other.save_pretrained(od)
        build_tokenizer().save_pretrained(od)
        assert main([str(ckpt), str(od), str(tmp_path / f"out{i}")]) == 2
        errs = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
        assert len(errs) == 1 and fragment in errs[0], errs
        assert not (tmp_path / f"out{i}").exists()
    for i, fragment in enumerate(["num_hidden_layers is 2 but the loaded model has 3", "num_key_value_heads"]):
        # issue 15: shapes only (the base's config.json, never loaded) still refuses another layer / kv-head count
        assert main([str(ckpt), str(tmp_path / f"other{i}"), str(tmp_path / f"out{i}"), "--no-weights-check"]) == 2
        errs = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
        assert len(errs) == 1 and fragment in errs[0], errs
    assert main([str(ckpt), str(base_dir), str(tmp_path / "ok"), "--json"]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert out["out"] == str(tmp_path / "ok") and out["num_stop_tokens"] == 2 and out["stop_token_id"] == 39
    assert warnings(cap.err) == []
    # --no-weights-check: shapes only, and a warning says the weights were not checked
    assert main([str(ckpt), str(tmp_path / "other2"), str(tmp_path / "shapes"), "--no-weights-check"]) == 0
    w = warnings(capsys.readouterr().err)
    assert len(w) == 1 and "not hashed" in w[0]
    assert main([str(tmp_path / "nope"), str(base_dir), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'nope'}: not a directory (expected a STOP checkpoint)"]
    with pytest.raises(SystemExit) as e:
        main([str(ckpt)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
