"""Convert a STOP checkpoint (the authors' release layout) into a LoRA adapter SGLang's LoRA manager loads.

The [STOP] vector is the one thing stock SGLang cannot take as-is: its LoRA "added tokens" path raises
NotImplementedError in 0.5.23, and ``input_embeds`` requests bypass the radix cache. So the vector rides
in the adapter as an ``embed_tokens`` LoRA delta on one reserved token id (a padded embedding row no
tokenizer string maps to): ``A[0, id] = 1``, ``B[:, 0] = (v - E[id]) / scaling``. With the adapter active,
``E[id] + scaling * B @ A[:, id] == v``; every other token (A column 0) and every base request is unchanged.

Output directory (what ``--lora-paths stop=DIR`` points at)::

    adapter_config.json        the checkpoint's, with embed_tokens added to target_modules
    adapter_model.safetensors  the checkpoint's LoRA weights + the embed_tokens delta (fp32)
    stop/config.json           StopAdapterConfig: the reserved id, k, hidden size
    stop/head.safetensors      the classifier head (weight [2, H], bias [2]), applied server-side

``stop/`` is a subfolder so SGLang's adapter loader (which reads top-level ``*.safetensors``) never sees it.

Every checkpoint file is read through the in-process loader's readers (scorers/stop/checkpoint.py), so a
missing, truncated or garbage file is one UserError naming it; the output directory is built beside
``OUT_DIR`` and renamed into place, so a server never loads half an adapter.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import torch
from pydantic import BaseModel, ConfigDict, Field

from sglang_stop.errors import UserError
from sglang_stop.io import read_model_json

if TYPE_CHECKING:
    from sglang_stop.scorers.stop.checkpoint import BaseModelInfo

FORMAT = "sglang-stop-adapter/1"
STOP_SUBDIR = "stop"
EMBED_A = "base_model.model.model.embed_tokens.lora_embedding_A"
EMBED_B = "base_model.model.model.embed_tokens.lora_embedding_B"


class StopAdapterConfig(BaseModel):
    """``stop/config.json``: what the server plugin needs beyond the LoRA weights."""

    model_config = ConfigDict(extra="forbid")

    format: str = FORMAT
    stop_token_id: int = Field(..., ge=0, description="reserved id whose LoRA embedding is the [STOP] vector")
    num_stop_tokens: int = Field(..., ge=1, description="k: [STOP] tokens appended to each prefix")
    hidden_size: int = Field(..., ge=1)
    vocab_size: int = Field(..., ge=1, description="the base model's embedding rows")
    positive_label: int = Field(1, ge=0, le=1, description="softmax column that is p(good)")


def is_stop_adapter(path: str | Path) -> bool:
    return (Path(path) / STOP_SUBDIR / "config.json").is_file()


def load_stop_adapter(path: str | Path) -> tuple[StopAdapterConfig, torch.Tensor, torch.Tensor]:
    """(config, head weight [2, H] fp32, head bias [2] fp32) of a converted adapter directory; a bad file
    is a UserError naming it (the server refuses the adapter instead of crashing its scheduler)."""
    from sglang_stop.scorers.stop.checkpoint import read_head

    d = Path(path) / STOP_SUBDIR
    cfg = read_model_json(d / "config.json", StopAdapterConfig, missing="missing (not a converted STOP adapter)")
    w, b = read_head(d / "head.safetensors", cfg.hidden_size)
    return cfg, w, b


def _adapter_dir(ckpt: Path) -> Path:
    for cand in (ckpt / "adapter" / "classifier", ckpt / "adapter", ckpt):
        if (cand / "adapter_config.json").is_file():
            return cand
    raise UserError(f"{ckpt}: no adapter_config.json under adapter/classifier/ or adapter/")


def _base_embedding_row(model_dir: Path, row: int) -> torch.Tensor:
    """One row of the base model's input embedding, read lazily from its safetensors shards."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise UserError(f"{model_dir}: no *.safetensors weights (the converter reads the embedding row)")
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as sf:
                for key in sf.keys():
                    if key.endswith("embed_tokens.weight"):
                        return sf.get_slice(key)[row : row + 1].float()[0]
        except Exception as e:  # noqa: BLE001 - a truncated or garbage shard
            raise UserError(f"{f}: not a readable safetensors file ({_first_line(e)})") from None
    raise UserError(f"{model_dir}: no '*embed_tokens.weight' tensor found")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _tokenizer_size(model_dir: Path, ckpt: Path) -> int:
    """Ids below this map to tokenizer strings; the [STOP] id must be at or above it."""
    from transformers import AutoTokenizer

    dirs = [model_dir]
    if (ckpt / "tokenizer").is_dir():  # the authors' tokenizer adds "[ASSESS]": keep clear of it too
        dirs.append(ckpt / "tokenizer")
    sizes = []
    for d in dirs:
        try:
            sizes.append(len(AutoTokenizer.from_pretrained(d)))
        except Exception as e:  # noqa: BLE001 - missing or garbage tokenizer files
            raise UserError(f"{d}: cannot load the tokenizer ({_first_line(e)})") from None
    return max(sizes)


def check_base(ckpt: Path, base: Path, *, check_weights: bool = True) -> BaseModelInfo:
    """The base's shapes (and, when the checkpoint records a weights hash and ``check_weights``, its
    identity: the base is loaded on CPU at the recorded dtype and hashed) checked against the checkpoint's
    ``base_model`` with the loader's own :func:`check_base_model`. Returns what was read of the base."""
    from sglang_stop.scorers.stop.checkpoint import (
        BaseModelInfo,
        check_base_model,
        check_shapes,
        read_config,
        read_json_object,
    )

    if not ckpt.is_dir():
        raise UserError(f"{ckpt}: not a directory (expected a STOP checkpoint)")
    f = base / "config.json"
    if not f.is_file():
        raise UserError(f"{base}: not a Hugging Face model directory (no config.json)")
    bcfg = read_json_object(f)
    where = ckpt / "assess_token_config.json"
    recorded = read_config(ckpt).base_model if where.is_file() else None
    have = BaseModelInfo.from_config(bcfg, name=base.name, name_or_path=str(base))
    if check_weights and recorded is not None and recorded.weights_hash:
        from sglang_stop.models import load_model

        check_shapes(where, recorded, have)  # before paying for the load
        model, _ = load_model(base, device="cpu", dtype=recorded.dtype or "float32")
        have = BaseModelInfo.of(model)
        del model
    check_base_model(where, recorded, have)
    return have


def convert_checkpoint(
    ckpt_dir: str | Path,
    base_model_dir: str | Path,
    out_dir: str | Path,
    *,
    stop_token_id: int | None = None,
    num_stop_tokens: int | None = None,
    check_weights: bool = True,
) -> StopAdapterConfig:
    """Write the SGLang adapter for ``ckpt_dir`` (authors' layout) on base ``base_model_dir`` to ``out_dir``.

    The base is checked as the in-process loader checks it (``check_base``) before anything is written.
    """
    from safetensors.torch import save_file

    from sglang_stop.io import atomic_dir
    from sglang_stop.scorers.stop.checkpoint import (
        adapter_weights,
        read_adapter_config,
        read_config,
        read_head,
        read_stop_vector,
    )

    ckpt, base, out = Path(ckpt_dir), Path(base_model_dir), Path(out_dir)
    _check_out(out)
    have = check_base(ckpt, base, check_weights=check_weights)
    adir = _adapter_dir(ckpt)
    acfg = read_adapter_config(adir)
    if acfg.get("use_dora") or acfg.get("rank_pattern") or acfg.get("alpha_pattern"):
        raise UserError(f"{adir}: DoRA / rank_pattern / alpha_pattern adapters are not supported by SGLang's LoRA")
    r, alpha = int(acfg["r"]), float(acfg["lora_alpha"])
    sglang_scaling = alpha / r  # what sglang applies (lora.py); rsLoRA's alpha/sqrt(r) is folded into B
    true_scaling = alpha / math.sqrt(r) if acfg.get("use_rslora") else sglang_scaling
    weights = adapter_weights(adir)
    bad = next((k for k, v in weights.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise UserError(f"{adir}: adapter weight {bad!r} is a {type(weights[bad]).__name__}, not a tensor")
    weights = {k: v.float().contiguous() for k, v in weights.items()}
    if true_scaling != sglang_scaling:
        for name in weights:
            if "lora_B" in name:
                weights[name] = weights[name] * (true_scaling / sglang_scaling)

    vocab, hidden = have.vocab_size, have.hidden_size
    tcfg_path = ckpt / "assess_token_config.json"
    tcfg = read_config(ckpt) if tcfg_path.is_file() else None
    vec = read_stop_vector(ckpt / (tcfg.embedding_path if tcfg else "assess_token_embedding.pth"), hidden)
    head_w, head_b = read_head(ckpt / "classifier_head.pth", hidden)

    if stop_token_id is None:
        first_free = _tokenizer_size(base, ckpt)
        if first_free >= vocab:
            raise UserError(
                f"{base}: no padded embedding row (tokenizer {first_free} >= vocab {vocab}); pass stop_token_id "
                "of a token that never occurs in text"
            )
        stop_token_id = vocab - 1  # the last padded row: farthest from ids a tokenizer update could add
    if not 0 <= stop_token_id < vocab:
        raise UserError(f"stop_token_id {stop_token_id} is outside the embedding [0, {vocab})")

    k = int(num_stop_tokens or (tcfg.num_assess_tokens if tcfg else 0))
    if k < 1:
        raise UserError(f"{ckpt}: no assess_token_config.json to read num_assess_tokens from (pass num_stop_tokens)")

    delta = vec - _base_embedding_row(base, stop_token_id)
    emb_a = torch.zeros(r, vocab)
    emb_a[0, stop_token_id] = 1.0
    emb_b = torch.zeros(hidden, r)
    emb_b[:, 0] = delta / sglang_scaling
    weights[EMBED_A], weights[EMBED_B] = emb_a, emb_b

    acfg["target_modules"] = sorted(set(acfg["target_modules"]) | {"embed_tokens"})
    acfg["use_rslora"] = False
    acfg.pop("modules_to_save", None)

    cfg = StopAdapterConfig(stop_token_id=stop_token_id, num_stop_tokens=k, hidden_size=hidden, vocab_size=vocab)
    with atomic_dir(out) as tmp:
        (tmp / STOP_SUBDIR).mkdir()
        (tmp / "adapter_config.json").write_text(json.dumps(acfg, indent=2))
        save_file(weights, str(tmp / "adapter_model.safetensors"))
        save_file({"weight": head_w.contiguous(), "bias": head_b.contiguous()},
                  str(tmp / STOP_SUBDIR / "head.safetensors"))
        (tmp / STOP_SUBDIR / "config.json").write_text(cfg.model_dump_json(indent=2))
    return cfg


def _check_out(out: Path) -> None:
    """``out`` is replaced as a whole: refuse a non-empty directory that is not a converter output (a model
    directory given by mistake would be deleted)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not is_stop_adapter(out):
        raise UserError(f"{out}: a non-empty directory that is not a converted STOP adapter; refusing to replace it "
                        "(choose a new output directory)")


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error policy: one ``error: ...`` line, exit 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(
        prog="python -m sglang_stop.srt.convert",
        description="Convert a STOP checkpoint into an adapter for `--lora-paths stop=OUT` on an SGLang server.",
    )
    ap.add_argument("checkpoint", help="STOP checkpoint dir (adapter/, classifier_head.pth, assess_token_*)")
    ap.add_argument("base_model", help="the base model's Hugging Face dir (the one the server serves)")
    ap.add_argument("out", help="output adapter dir")
    ap.add_argument("--stop-token-id", type=int, default=None, help="reserved id (default: last padded row)")
    ap.add_argument("--num-stop-tokens", type=int, default=None, help="k (default: from assess_token_config.json)")
    ap.add_argument("--no-weights-check", action="store_true",
                    help="check the base's shapes only, not its weights hash (skips loading the base on CPU)")
    ap.add_argument("--json", action="store_true", help="print one JSON object (the adapter's stop config) on stdout")
    a = ap.parse_args(argv)
    if a.num_stop_tokens is not None and a.num_stop_tokens < 1:
        ap.error(f"--num-stop-tokens: must be >= 1, got {a.num_stop_tokens}")
    try:
        cfg = convert_checkpoint(a.checkpoint, a.base_model, a.out, stop_token_id=a.stop_token_id,
                                 num_stop_tokens=a.num_stop_tokens, check_weights=not a.no_weights_check)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps({"out": str(a.out), **cfg.model_dump(mode="json")}))
    else:
        print(f"wrote {a.out}: stop_token_id={cfg.stop_token_id} k={cfg.num_stop_tokens}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
