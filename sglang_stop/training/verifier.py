"""Training of the Type II verifier (``scorers/verifier.py``) on Monte Carlo label records: soft
cross-entropy against (1 - s_mc, s_mc), AdamW, a split by problem, the best validation epoch saved
(``sglang-stop train-verifier``). Resumable by epoch: on a real model an epoch re-encodes every prefix
with gradients (minutes on a CPU), so each finished epoch's state is written atomically to ``work``."""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sglang_stop.errors import UserError
from sglang_stop.io import atomic_torch_save
from sglang_stop.scorers.stop import StopNet, StopNetConfig, save_checkpoint
from sglang_stop.scorers.verifier import VERIFIER_FILE, base_path, verifier_logits
from sglang_stop.training.labels import LabelRecord
from sglang_stop.training.train import checked_split


def train_verifier(
    records: Sequence[LabelRecord], base: str, out: str | Path, *, epochs: int = 3, lr: float = 1e-3,
    lora_r: int = 8, batch_size: int = 32, val_fraction: float = 0.2, seed: int = 0, log: Any = print,
    work: str | Path | None = None, progress: bool = False,
) -> dict[str, Any]:
    """Fit on label records: soft cross-entropy against (1 - s_mc, s_mc), AdamW, the split by problem STOP's
    training uses; the epoch with the lowest validation loss is saved. Returns that epoch and its loss.

    ``work`` (default ``OUT.work``): after each epoch the net, optimizer, shuffling state and best epoch are
    written there; a rerun with the same recipe and records continues after the last finished epoch.
    ``progress``: a tqdm bar per epoch on stderr."""
    from tqdm import tqdm

    from sglang_stop.models import load_model

    train, val = checked_split(records, val_fraction)  # before the model loads

    model, tok = load_model(base_path(base), device="cpu", dtype="float32")
    for q in model.parameters():
        q.requires_grad_(False)
    torch.manual_seed(seed)
    net = StopNet(StopNetConfig(num_assess_tokens=1, lora_r=lora_r, lora_alpha=2.0 * lora_r, lora_dropout=0.0), model)
    opt = torch.optim.AdamW([q for q in net.parameters() if q.requires_grad], lr=lr)
    rng = random.Random(seed)
    recipe = {"kind": "verifier", "epochs": epochs, "lr": lr, "lora_r": lora_r, "records": len(records)}
    state_p = Path(work) if work else Path(out).with_name(Path(out).name + ".work")
    state_p = state_p / "state.pt"
    digest = hashlib.sha256(json.dumps([(r.problem_id, r.s_mc, r.token_ids) for r in records]).encode()).hexdigest()
    resume = {"recipe": recipe, "batch_size": batch_size, "val_fraction": val_fraction, "seed": seed, "base": base,
              "records_sha256": digest}

    def loss_of(batch: Sequence[LabelRecord]) -> torch.Tensor:
        s = torch.tensor([r.s_mc for r in batch])
        logp = F.log_softmax(verifier_logits(net, model, [r.token_ids for r in batch]).float(), -1)
        return -(torch.stack([1 - s, s], 1) * logp).sum(1).mean()

    best: dict[str, Any] = {"val_loss": float("inf")}
    start = 1
    if state_p.is_file():
        state = torch.load(state_p, weights_only=False)
        if state["settings"] != resume:
            raise UserError(f"--out: {state_p.parent} holds a verifier run of other settings; delete it or choose "
                            "another --out")
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["optim"])
        rng.setstate(state["rng"])
        best, start = state["best"], state["epoch"] + 1
        log(f"resumed after epoch {state['epoch']} ({state_p})")
    for ep in range(start, epochs + 1):
        net.train()
        order = list(train)
        rng.shuffle(order)
        for i in tqdm(range(0, len(order), batch_size), desc=f"verifier epoch {ep}/{epochs}", unit="batch",
                      file=sys.stderr, disable=not progress):
            opt.zero_grad()
            loss_of(order[i : i + batch_size]).backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            vl = sum(loss_of(val[i : i + 128]).item() * len(val[i : i + 128]) for i in range(0, len(val), 128)) / len(val)
        log(f"epoch {ep}: val loss {vl:.4f}")
        if vl < best["val_loss"]:
            best = {"epoch": ep, "val_loss": vl}
            save_checkpoint(out, net, model, tok, training={**recipe, **best})
            (Path(out) / VERIFIER_FILE).write_text(json.dumps({"base": base}) + "\n")
        state_p.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(state_p, {"settings": resume, "epoch": ep, "best": best, "net": net.state_dict(),
                                    "optim": opt.state_dict(), "rng": rng.getstate()})
    return best
