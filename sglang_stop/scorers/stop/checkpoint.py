"""STOP checkpoints in the authors' release layout, written atomically and checked on load.

```
adapter/classifier/adapter_config.json        peft LoraConfig (peft's folder for an adapter named "classifier")
adapter/classifier/adapter_model.safetensors  LoRA A/B under peft's key names (``...q_proj.lora_A.weight``)
classifier_head.pth                Linear(hidden, 2) state dict
assess_token_embedding.pth         {"assess_token", "special_token_id", "input_embedding": [hidden], ...}
assess_token_config.json           {"assess_token", "special_token_id", "num_assess_tokens", ...} + ours
tokenizer/                         the base tokenizer with [STOP] added
```
This is what the authors' inference harness reads (bijiaxihh/STOP ``src/inference.py``: the LoRA from
``adapter/classifier/``; ``special_token_id`` from ``assess_token_config.json``, which it appends k times
to a prefix and refuses when negative). Without a tokenizer the id is the base's vocabulary size, the id
[STOP] gets when appended to a tokenizer as large as the embedding table. Checkpoints written before
(``adapter/`` directly) still load.
``base_model`` records the base's shapes and identity (name, weights hash); another base is refused.
The authors' own releases (``adapter/classifier/adapter_model.bin``, no ``base_model`` block) load too,
with one ``warning:`` line that the base could not be verified. Unreadable files are one UserError.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import click
import torch
from pydantic import BaseModel, Field, ValidationError
from safetensors.torch import load_file, save_file

from sglang_stop.errors import UserError
from sglang_stop.io import atomic_dir, read_model_json
from sglang_stop.scorers.stop.net import StopNet, StopNetConfig

CHECKPOINT_SCHEMA = 1
PEFT_PREFIX = "base_model.model."
ADAPTER_DIR = "adapter/classifier"  # where save_checkpoint writes the LoRA (the authors' layout)


class BaseModelInfo(BaseModel):
    """What must match between the checkpoint's base model and the one serving: the shapes the
    adapter's weights depend on, and the identity (name + weights hash, ``models.model_identity``),
    so a base with the same shapes but other weights is refused too."""

    model_type: str | None = None
    hidden_size: int
    num_hidden_layers: int
    vocab_size: int
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
    name_or_path: str | None = None
    name: str | None = Field(None, description="model_identity name of the base")
    weights_hash: str | None = Field(None, description="models.weights_hash of the base (independent of the load dtype)")
    dtype: str | None = Field(None, description="parameter dtype the base was trained at (informational)")

    @classmethod
    def from_config(cls, config: dict[str, Any], **identity: Any) -> BaseModelInfo:
        """From a ``config.json`` dict (multimodal configs: their ``text_config``)."""
        c = config.get("text_config") or config
        try:
            return cls(
                model_type=c.get("model_type"),
                hidden_size=c["hidden_size"],
                num_hidden_layers=c["num_hidden_layers"],
                vocab_size=c["vocab_size"],
                num_attention_heads=c.get("num_attention_heads"),
                num_key_value_heads=c.get("num_key_value_heads") or c.get("num_attention_heads"),
                **identity,
            )
        except (KeyError, ValidationError) as e:
            raise UserError(f"config.json: cannot read the base model's shapes ({e})") from None

    @classmethod
    def of(cls, model: Any) -> BaseModelInfo:
        """The loaded ``model``: its shapes and identity (the hash is cached on the model)."""
        from sglang_stop.models import model_identity

        name_or_path = getattr(model.config, "_name_or_path", None) or None
        return cls.from_config(
            model.config.get_text_config().to_dict(),
            name_or_path=name_or_path,
            dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
            **model_identity(model),
        )

    def describe(self) -> str:
        h = f"weights {self.weights_hash}" if self.weights_hash else "weights unknown"
        return f"{self.name or self.name_or_path or 'an unnamed model'} ({h}{', ' + self.dtype if self.dtype else ''})"


SHAPE_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "num_attention_heads",
                "num_key_value_heads")


def check_base_model(where: Path, recorded: BaseModelInfo | None, have: BaseModelInfo) -> None:
    """Refuse a checkpoint made for another base (``where`` names the checkpoint's config file).

    Shapes are compared field by field, then the weights hash (bf16-rounded, so the same base loaded
    at another precision still matches); for the authors' files, which record no base, one
    ``warning:`` line says the base could not be verified. Shared by :func:`load_checkpoint` and
    ``srt/convert.py``.
    """
    if recorded is None:
        _warn(f"{where}: records no base model; cannot verify it was trained for {have.describe()}")
        return
    check_shapes(where, recorded, have)
    if recorded.weights_hash is None:
        _warn(f"{where}: records no base weights hash; cannot verify it was trained for {have.describe()}")
    elif have.weights_hash is None:
        _warn(f"{where}: the base's weights were not hashed; only its shapes were checked against "
              f"{recorded.describe()}")
    elif recorded.weights_hash != have.weights_hash:
        raise UserError(
            f"{where}: trained for base {recorded.describe()}, but the loaded model is {have.describe()}: "
            f"same shapes, other weights; use the checkpoint made for this model"
        )


def check_shapes(where: Path, recorded: BaseModelInfo, have: BaseModelInfo) -> None:
    """The shape half of :func:`check_base_model` (cheap: the converter runs it before loading weights)."""
    for field in SHAPE_FIELDS:
        want, got = getattr(recorded, field), getattr(have, field)
        if want is not None and got is not None and want != got:
            raise UserError(
                f"{where}: base_model.{field} is {want} but the loaded model has {got}: this checkpoint was trained "
                f"for {recorded.describe()}, the loaded model is {have.describe()}"
            )


def _warn(msg: str) -> None:
    click.echo(f"warning: {msg}", err=True)


class AssessTokenConfig(BaseModel):
    """``assess_token_config.json``: the authors' keys first, then ours (absent in their releases)."""

    assess_token: str = "[STOP]"
    special_token_id: int = -1
    num_assess_tokens: int = Field(4, ge=1)
    tokenizer_dir: str = "tokenizer"
    embedding_path: str = "assess_token_embedding.pth"
    schema_version: int = CHECKPOINT_SCHEMA
    mode: Literal["adapter", "no_adapter"] = "adapter"
    base_model: BaseModelInfo | None = None
    training: dict[str, Any] = Field(default_factory=dict, description="recipe and validation metrics")


def save_checkpoint(
    path: str | Path, net: StopNet, model: Any, tokenizer: Any = None, training: dict[str, Any] | None = None
) -> Path:
    """Write the authors' layout plus our ``base_model`` block (shapes + identity), atomically."""
    from peft import LoraConfig

    dest = Path(path)
    base = BaseModelInfo.of(model)
    with atomic_dir(dest) as tmp:
        cfg = net.cfg
        special_id = base.vocab_size  # the id an appended [STOP] gets; a tokenizer says exactly
        if tokenizer is not None:
            tok = _copy_tokenizer(tokenizer)
            tok.add_tokens(["[STOP]"], special_tokens=True)
            special_id = int(tok.convert_tokens_to_ids("[STOP]"))
            tok.save_pretrained(tmp / "tokenizer")
        if cfg.mode == "adapter":
            lcfg = LoraConfig(
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,  # type: ignore[arg-type]  # peft takes a float alpha
                lora_dropout=cfg.lora_dropout,
                target_modules=sorted(cfg.target_modules),
                bias="none",
                task_type="CAUSAL_LM",
                base_model_name_or_path=base.name_or_path,
            )
            lcfg.save_pretrained(str(tmp / ADAPTER_DIR))
            tensors = {}
            for name, a, b in zip(net.module_names, net.lora_A, net.lora_B):
                tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = a.detach().float().cpu().contiguous()
                tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = b.detach().float().cpu().contiguous()
            save_file(tensors, str(tmp / ADAPTER_DIR / "adapter_model.safetensors"))
        torch.save({k: v.detach().float().cpu() for k, v in net.head.state_dict().items()}, tmp / "classifier_head.pth")
        torch.save(
            {
                "assess_token": "[STOP]",
                "special_token_id": special_id,
                "input_embedding": net.assess_embedding.detach().float().cpu(),
                "output_embedding": None,
            },
            tmp / "assess_token_embedding.pth",
        )
        meta = AssessTokenConfig(
            special_token_id=special_id,
            num_assess_tokens=cfg.num_assess_tokens,
            mode=cfg.mode,
            base_model=base,
            training=training or {},
        )
        (tmp / "assess_token_config.json").write_text(json.dumps(meta.model_dump(mode="json"), indent=2) + "\n")
    return dest


def _copy_tokenizer(tokenizer: Any) -> Any:
    import copy

    return copy.deepcopy(tokenizer)


def read_config(path: str | Path) -> AssessTokenConfig:
    """``assess_token_config.json`` of checkpoint ``path``, validated (one UserError line otherwise)."""
    p = Path(path)
    f = p / "assess_token_config.json"
    if not p.is_dir():
        raise UserError(f"scorer.options.checkpoint: {p}: not a directory")
    if not any(p.iterdir()):
        raise UserError(f"scorer.options.checkpoint: {p}: empty directory (not a STOP checkpoint)")
    return read_model_json(f, AssessTokenConfig, missing="missing (not a STOP checkpoint directory)")


def _adapter_dir(p: Path) -> Path | None:
    for d in (p / ADAPTER_DIR, p / "adapter"):
        if (d / "adapter_config.json").is_file():
            return d
    return None


def load_tensors(path: Path) -> Any:
    """A ``.safetensors`` or torch file's contents; truncated or garbage files are a UserError naming it."""
    if not path.is_file():
        raise UserError(f"{path}: missing from the STOP checkpoint")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle, zip, safetensors and OS errors all mean "unreadable"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"{path}: not a readable {'safetensors' if path.suffix == '.safetensors' else 'torch'} "
                        f"file ({first})") from None


def _tensor(obj: Any, key: str | None, path: Path, what: str) -> torch.Tensor:
    t = obj.get(key) if key is not None and isinstance(obj, dict) else obj
    if not isinstance(t, torch.Tensor):
        raise UserError(f"{path}: expected {what}, found {type(t).__name__}")
    return t


def read_head(path: Path, hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``classifier_head.pth``: (weight [2, hidden], bias [2]) of the Linear(hidden, 2) head."""
    obj = load_tensors(path)
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a Linear(hidden, 2) state dict, found {type(obj).__name__}")
    w = _tensor(obj, "weight", path, "a 'weight' tensor")
    b = obj.get("bias", torch.zeros(2))
    b = _tensor(b, None, path, "a 'bias' tensor")
    if tuple(w.shape) != (2, hidden) or tuple(b.shape) != (2,):
        raise UserError(f"{path}: head weight {tuple(w.shape)} / bias {tuple(b.shape)}, expected (2, {hidden}) / (2,) "
                        f"for the base's hidden size {hidden}")
    return w.float(), b.float()


def read_stop_vector(path: Path, hidden: int) -> torch.Tensor:
    """The learned [STOP] input embedding (``assess_token_embedding.pth``), ``[hidden]``."""
    obj = load_tensors(path)
    vec = _tensor(obj, "input_embedding", path, "a tensor or a dict with an 'input_embedding' tensor")
    if vec.numel() != hidden:
        raise UserError(f"{path}: [STOP] vector has {vec.numel()} values, the base's hidden size is {hidden}")
    return vec.float().reshape(-1)


def read_json_object(f: Path) -> dict[str, Any]:
    """A JSON file that must hold one object (an adapter's or a base model's config); else one UserError."""
    try:
        obj = json.loads(f.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{f}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{f}: expected a JSON object")
    return obj


def read_adapter_config(ad: Path) -> dict[str, Any]:
    """``adapter_config.json`` with the keys we use checked (rank, alpha, listed target modules)."""
    f = ad / "adapter_config.json"
    acfg = read_json_object(f)
    for key in ("r", "lora_alpha"):
        v = acfg.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise UserError(f"{f}: {key}: expected a positive number, got {v!r}")
    targets = acfg.get("target_modules")
    if isinstance(targets, str):
        raise UserError(f"{f}: target_modules as a regex is not supported; list names")
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise UserError(f"{f}: target_modules: expected a list of module names, got {targets!r}")
    return acfg


def adapter_weights(ad: Path) -> dict[str, torch.Tensor]:
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        if (ad / name).is_file():
            obj = load_tensors(ad / name)
            if not isinstance(obj, dict):
                raise UserError(f"{ad / name}: expected a dict of tensors, found {type(obj).__name__}")
            return obj
    raise UserError(f"{ad}: no adapter_model.safetensors or adapter_model.bin")


def load_checkpoint(path: str | Path, model: Any) -> StopNet:
    """Load onto ``model``'s device. Every file is read and checked (base model identity and shapes,
    readable tensors of the right shapes) before anything is built; any fault is one UserError."""
    p = Path(path)
    meta = read_config(p)
    have = BaseModelInfo.of(model)
    check_base_model(p / "assess_token_config.json", meta.base_model, have)
    head_w, head_b = read_head(p / "classifier_head.pth", have.hidden_size)
    emb = read_stop_vector(p / meta.embedding_path, have.hidden_size)
    cfg_kwargs: dict[str, Any] = {"num_assess_tokens": meta.num_assess_tokens, "mode": meta.mode}
    lora_state: dict[str, torch.Tensor] = {}
    ad = _adapter_dir(p)
    if meta.mode == "adapter":
        if ad is None:
            raise UserError(f"{p / ADAPTER_DIR}: missing adapter_config.json (peft adapter)")
        acfg = read_adapter_config(ad)
        cfg_kwargs.update(lora_r=int(acfg["r"]), lora_alpha=float(acfg["lora_alpha"]),
                          lora_dropout=acfg.get("lora_dropout") or 0.0, target_modules=acfg["target_modules"])
        lora_state = adapter_weights(ad)
    try:
        net = StopNet(StopNetConfig(**cfg_kwargs), model)
    except (ValueError, ValidationError) as e:  # no Linear matches target_modules; a bad rank/dropout
        raise UserError(f"{ad or p}: {str(e).splitlines()[0]}") from None
    with torch.no_grad():
        net.head.weight.copy_(head_w)
        net.head.bias.copy_(head_b)
        net.assess_embedding.copy_(emb)
        for i, name in enumerate(net.module_names):
            try:
                a = lora_state[f"{PEFT_PREFIX}{name}.lora_A.weight"]
                b = lora_state[f"{PEFT_PREFIX}{name}.lora_B.weight"]
            except KeyError:
                raise UserError(
                    f"{ad}: no LoRA weights for layer {name!r}: the adapter was trained on another architecture"
                ) from None
            if a.shape != net.lora_A[i].shape or b.shape != net.lora_B[i].shape:
                raise UserError(
                    f"{ad}: LoRA shape mismatch at {name!r}: A {tuple(a.shape)}, B {tuple(b.shape)}, expected "
                    f"A {tuple(net.lora_A[i].shape)}, B {tuple(net.lora_B[i].shape)} (rank {net.cfg.lora_r})"
                )
            net.lora_A[i].copy_(a.float())
            net.lora_B[i].copy_(b.float())
        extra = {k for k in lora_state if "lora_" in k} - {
            f"{PEFT_PREFIX}{n}.lora_{x}.weight" for n in net.module_names for x in "AB"
        }
        if extra:
            raise UserError(f"{ad}: LoRA weights for layers the model lacks, e.g. {sorted(extra)[0]!r}")
    dev = next(model.parameters()).device
    return net.to(dev).eval()
