"""STOP checkpoints in the authors' release layout, written atomically and checked on load.

```
adapter/adapter_config.json        peft LoraConfig
adapter/adapter_model.safetensors  LoRA A/B under peft's key names (``...q_proj.lora_A.weight``)
classifier_head.pth                Linear(hidden, 2) state dict
assess_token_embedding.pth         {"assess_token", "special_token_id", "input_embedding": [hidden], ...}
assess_token_config.json           {"assess_token", "special_token_id", "num_assess_tokens", ...} + ours
tokenizer/                         the base tokenizer with [STOP] added
```
The authors' own releases (``adapter/classifier/adapter_model.bin``, no ``base_model`` block) load too.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field, ValidationError
from safetensors.torch import load_file, save_file

from sglang_stop.errors import UserError
from sglang_stop.scorers.stop_net import StopNet, StopNetConfig

CHECKPOINT_SCHEMA = 1
PEFT_PREFIX = "base_model.model."


class BaseModelInfo(BaseModel):
    """What must match between the checkpoint's base model and the one serving."""

    model_type: str | None = None
    hidden_size: int
    num_hidden_layers: int
    vocab_size: int
    name_or_path: str | None = None

    @classmethod
    def of(cls, model: Any) -> BaseModelInfo:
        c = model.config.get_text_config()
        return cls(
            model_type=getattr(c, "model_type", None),
            hidden_size=c.hidden_size,
            num_hidden_layers=c.num_hidden_layers,
            vocab_size=c.vocab_size,
            name_or_path=getattr(model.config, "_name_or_path", None) or None,
        )


class AssessTokenConfig(BaseModel):
    """``assess_token_config.json``: the authors' keys first, then ours (absent in their releases)."""

    assess_token: str = "[STOP]"
    special_token_id: int = -1
    num_assess_tokens: int = Field(4, ge=1)
    tokenizer_dir: str = "tokenizer"
    embedding_path: str = "assess_token_embedding.pth"
    schema_version: int = CHECKPOINT_SCHEMA
    mode: str = "adapter"
    base_model: BaseModelInfo | None = None
    training: dict[str, Any] = Field(default_factory=dict, description="recipe and validation metrics")


def save_checkpoint(
    path: str | Path, net: StopNet, model: Any, tokenizer: Any = None, training: dict[str, Any] | None = None
) -> Path:
    """Write to a temp dir beside ``path`` and rename over it: readers never see half a checkpoint."""
    from peft import LoraConfig

    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        cfg = net.cfg
        special_id = -1
        if tokenizer is not None:
            tok = _copy_tokenizer(tokenizer)
            tok.add_tokens(["[STOP]"], special_tokens=True)
            special_id = int(tok.convert_tokens_to_ids("[STOP]"))
            tok.save_pretrained(tmp / "tokenizer")
        if cfg.mode == "adapter":
            lcfg = LoraConfig(
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules=sorted(cfg.target_modules),
                bias="none",
                task_type="CAUSAL_LM",
                base_model_name_or_path=BaseModelInfo.of(model).name_or_path,
            )
            lcfg.save_pretrained(str(tmp / "adapter"))
            tensors = {}
            for name, a, b in zip(net.module_names, net.lora_A, net.lora_B):
                tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = a.detach().float().cpu().contiguous()
                tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = b.detach().float().cpu().contiguous()
            save_file(tensors, str(tmp / "adapter" / "adapter_model.safetensors"))
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
            base_model=BaseModelInfo.of(model),
            training=training or {},
        )
        (tmp / "assess_token_config.json").write_text(json.dumps(meta.model_dump(mode="json"), indent=2) + "\n")
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old.{os.getpid()}")
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _copy_tokenizer(tokenizer: Any) -> Any:
    import copy

    return copy.deepcopy(tokenizer)


def read_config(path: str | Path) -> AssessTokenConfig:
    p = Path(path)
    f = p / "assess_token_config.json"
    if not p.is_dir():
        raise UserError(f"scorer.options.checkpoint: {p}: not a directory")
    if not f.is_file():
        raise UserError(f"{f}: missing (not a STOP checkpoint directory)")
    try:
        return AssessTokenConfig.model_validate_json(f.read_text())
    except ValidationError as e:
        err = e.errors()[0]
        raise UserError(f"{f}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def _adapter_dir(p: Path) -> Path | None:
    for d in (p / "adapter", p / "adapter" / "classifier"):
        if (d / "adapter_config.json").is_file():
            return d
    return None


def load_checkpoint(path: str | Path, model: Any) -> StopNet:
    """Load onto ``model``'s device; a checkpoint for another base model is a :class:`UserError`."""
    p = Path(path)
    meta = read_config(p)
    have = BaseModelInfo.of(model)
    if meta.base_model is not None:
        for field in ("hidden_size", "num_hidden_layers", "vocab_size"):
            want, got = getattr(meta.base_model, field), getattr(have, field)
            if want != got:
                raise UserError(
                    f"{p / 'assess_token_config.json'}: base_model.{field} is {want} but the loaded model has {got}: "
                    f"this checkpoint was trained for {meta.base_model.name_or_path or 'another model'}"
                )
    head_f = p / "classifier_head.pth"
    emb_f = p / meta.embedding_path
    for f in (head_f, emb_f):
        if not f.is_file():
            raise UserError(f"{f}: missing from the STOP checkpoint")
    head = torch.load(head_f, map_location="cpu", weights_only=True)
    emb_obj = torch.load(emb_f, map_location="cpu", weights_only=True)
    emb = emb_obj["input_embedding"] if isinstance(emb_obj, dict) else emb_obj
    if head["weight"].shape[1] != have.hidden_size or emb.numel() != have.hidden_size:
        raise UserError(
            f"{head_f}: hidden size {head['weight'].shape[1]} does not match the loaded model's {have.hidden_size}"
        )
    cfg_kwargs: dict[str, Any] = {"num_assess_tokens": meta.num_assess_tokens, "mode": meta.mode}
    lora_state: dict[str, torch.Tensor] = {}
    if meta.mode == "adapter":
        ad = _adapter_dir(p)
        if ad is None:
            raise UserError(f"{p / 'adapter'}: missing adapter_config.json (peft adapter)")
        acfg = json.loads((ad / "adapter_config.json").read_text())
        targets = acfg.get("target_modules")
        if isinstance(targets, str):
            raise UserError(f"{ad / 'adapter_config.json'}: target_modules as a regex is not supported; list names")
        cfg_kwargs.update(
            lora_r=acfg["r"], lora_alpha=acfg["lora_alpha"], lora_dropout=acfg.get("lora_dropout", 0.0), target_modules=targets
        )
        if (ad / "adapter_model.safetensors").is_file():
            lora_state = load_file(str(ad / "adapter_model.safetensors"))
        elif (ad / "adapter_model.bin").is_file():
            lora_state = torch.load(ad / "adapter_model.bin", map_location="cpu", weights_only=True)
        else:
            raise UserError(f"{ad}: no adapter_model.safetensors or adapter_model.bin")
    net = StopNet(StopNetConfig(**cfg_kwargs), model)
    with torch.no_grad():
        net.head.load_state_dict({k: v.float() for k, v in head.items()})
        net.assess_embedding.copy_(emb.float().view(-1))
        if meta.mode == "adapter":
            for i, name in enumerate(net.module_names):
                try:
                    a = lora_state[f"{PEFT_PREFIX}{name}.lora_A.weight"]
                    b = lora_state[f"{PEFT_PREFIX}{name}.lora_B.weight"]
                except KeyError:
                    raise UserError(
                        f"{ad}: no LoRA weights for layer {name!r}: the adapter was trained on another architecture"
                    ) from None
                if a.shape != net.lora_A[i].shape or b.shape != net.lora_B[i].shape:
                    raise UserError(f"{ad}: LoRA shape mismatch at {name!r} ({tuple(a.shape)} vs {tuple(net.lora_A[i].shape)})")
                net.lora_A[i].copy_(a.float())
                net.lora_B[i].copy_(b.float())
            extra = {k for k in lora_state if "lora_" in k} - {
                f"{PEFT_PREFIX}{n}.lora_{x}.weight" for n in net.module_names for x in "AB"
            }
            if extra:
                raise UserError(f"{ad}: LoRA weights for layers the model lacks, e.g. {sorted(extra)[0]!r}")
    dev = next(model.parameters()).device
    return net.to(dev).eval()
