"""Training of the Type II verifier (``scorers/verifier.py``) on Monte Carlo label records: soft
cross-entropy against (1 - s_mc, s_mc), AdamW, a split by problem, the best validation epoch saved
(``sglang-stop train-verifier``)."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sglang_stop.scorers.stop import StopNet, StopNetConfig, save_checkpoint
from sglang_stop.scorers.verifier import VERIFIER_FILE, base_path, verifier_logits
from sglang_stop.training.labels import LabelRecord
from sglang_stop.training.train import checked_split


def train_verifier(
    records: Sequence[LabelRecord], base: str, out: str | Path, *, epochs: int = 3, lr: float = 1e-3,
    lora_r: int = 8, batch_size: int = 32, val_fraction: float = 0.2, seed: int = 0, log: Any = print,
) -> dict[str, Any]:
    """Fit on label records: soft cross-entropy against (1 - s_mc, s_mc), AdamW, the split by problem STOP's
    training uses; the epoch with the lowest validation loss is saved. Returns that epoch and its loss."""
    from sglang_stop.models import load_model

    train, val = checked_split(records, val_fraction)  # before the model loads

    model, tok = load_model(base_path(base), device="cpu", dtype="float32")
    for q in model.parameters():
        q.requires_grad_(False)
    torch.manual_seed(seed)
    net = StopNet(StopNetConfig(num_assess_tokens=1, lora_r=lora_r, lora_alpha=2.0 * lora_r, lora_dropout=0.0), model)
    opt = torch.optim.AdamW([q for q in net.parameters() if q.requires_grad], lr=lr)
    rng = random.Random(seed)

    def loss_of(batch: Sequence[LabelRecord]) -> torch.Tensor:
        s = torch.tensor([r.s_mc for r in batch])
        logp = F.log_softmax(verifier_logits(net, model, [r.token_ids for r in batch]).float(), -1)
        return -(torch.stack([1 - s, s], 1) * logp).sum(1).mean()

    best: dict[str, Any] = {"val_loss": float("inf")}
    for ep in range(1, epochs + 1):
        net.train()
        order = list(train)
        rng.shuffle(order)
        for i in range(0, len(order), batch_size):
            opt.zero_grad()
            loss_of(order[i : i + batch_size]).backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            vl = sum(loss_of(val[i : i + 128]).item() * len(val[i : i + 128]) for i in range(0, len(val), 128)) / len(val)
        log(f"epoch {ep}: val loss {vl:.4f}")
        if vl < best["val_loss"]:
            best = {"epoch": ep, "val_loss": vl}
            recipe = {"kind": "verifier", "epochs": epochs, "lr": lr, "lora_r": lora_r, "records": len(records), **best}
            save_checkpoint(out, net, model, tok, training=recipe)
            (Path(out) / VERIFIER_FILE).write_text(json.dumps({"base": base}) + "\n")
    return best
