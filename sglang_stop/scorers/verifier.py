"""Type II of the paper's taxonomy (external, learnable): a PRM-style verifier that re-encodes each prefix.

A separate model, a second copy of the base with its own LoRA (on every position) and a Linear(hidden, 2)
head on the last token, is trained on the same Monte Carlo labels as STOP. At a prune point it reads the
path from scratch (prompt + prefix token ids; the copy shares the base's tokenizer), as process reward
models do; STOP instead runs k [STOP] tokens over the KV cache the generating model already holds. That
difference is the cost `bench scoring` measures.

Checkpoint: the STOP layout (``scorers/stop/checkpoint.py``: adapter, head, base identity; the [STOP]
vector is unused) plus ``verifier.json`` naming the base to copy (``"testbed"`` = the embedded model).
Train: ``python -m sglang_stop.scorers.verifier --labels L.jsonl --out DIR`` (label records as
``sglang-stop label`` writes them; split by problem; the epoch with the best validation loss is kept).
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from sglang_stop.errors import UserError
from sglang_stop.scorers.base import Branch, ScoreContext, Scorer, ScorerOptions
from sglang_stop.scorers.stop import StopNet, StopNetConfig, decoder_of, load_checkpoint, save_checkpoint

VERIFIER_FILE = "verifier.json"
TESTBED = "testbed"


def verifier_logits(net: StopNet, model: Any, seqs: Sequence[Sequence[int]], pad_id: int = 0) -> torch.Tensor:
    """Re-encode each sequence (left-padded batch) with the LoRA active on every position; logits of the
    head on the last token's final hidden state, ``[B, 2]``."""
    dev = next(model.parameters()).device
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long, device=dev)
    mask = torch.zeros((len(seqs), width), dtype=torch.long, device=dev)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(list(s), device=dev)
        mask[i, width - len(s) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with net.lora_active(model):
        h = decoder_of(model)(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state[:, -1]
    return net.head(h.to(net.head.weight.dtype))


def _base_path(spec: str) -> str:
    if spec == TESTBED:
        from sglang_stop.testbed import asset_dir

        return str(asset_dir())
    return spec


def load_verifier(path: str | Path, device: str = "cpu") -> tuple[StopNet, Any]:
    """The verifier's own copy of its base and its weights on it. One UserError if anything is off."""
    from sglang_stop.models import load_model

    p = Path(path)
    f = p / VERIFIER_FILE
    if not f.is_file():
        raise UserError(f"scorer.options.checkpoint: {f}: missing (not a verifier checkpoint)")
    try:
        base = json.loads(f.read_text())["base"]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{f}: expected {{\"base\": MODEL}} ({e})") from None
    model, _ = load_model(_base_path(base), device=device, dtype="float32")
    return load_checkpoint(p, model), model


class VerifierOptions(ScorerOptions):
    checkpoint: str = Field(..., description="verifier checkpoint directory (python -m sglang_stop.scorers.verifier)")
    batch_size: int = Field(32, ge=1)


class VerifierScorer(Scorer):
    """p(good) from the verifier, which re-encodes every prefix with its own model copy."""

    name = "verifier"
    Options = VerifierOptions
    nonnegative = True

    def __init__(self, options: ScorerOptions | None = None) -> None:
        super().__init__(options)
        self._loaded: tuple[StopNet, Any] | None = None
        self._lock = threading.Lock()

    def _get(self) -> tuple[StopNet, Any]:
        with self._lock:
            if self._loaded is None:
                self._loaded = load_verifier(self.options.checkpoint)  # type: ignore[attr-defined]
            return self._loaded

    def prepare(self, backend: Any) -> None:
        self._get()

    @torch.inference_mode()
    def score(self, branches: Sequence[Branch], ctx: ScoreContext) -> list[float]:
        net, model = self._get()
        bs = self.options.batch_size  # type: ignore[attr-defined]
        out: list[float] = []
        with self._lock:  # one model copy; concurrent programs take turns
            for s in range(0, len(branches), bs):
                logits = verifier_logits(net, model, [b.token_ids for b in branches[s : s + bs]])
                out.extend(torch.softmax(logits.float(), -1)[:, 1].tolist())
        return out


# --- training -------------------------------------------------------------------------------------


def _is_val(pid: str, fraction: float) -> bool:
    return int(hashlib.sha256(pid.encode()).hexdigest()[:8], 16) % 10_000 < fraction * 10_000


def train_verifier(
    records: Sequence[dict[str, Any]], base: str, out: str | Path, *, epochs: int = 3, lr: float = 1e-3,
    lora_r: int = 8, batch_size: int = 32, val_fraction: float = 0.2, seed: int = 0, log: Any = print,
) -> dict[str, Any]:
    """Fit on label records (``token_ids``, ``s_mc``, ``problem_id``): soft cross-entropy against
    (1 - s_mc, s_mc), AdamW, a split by problem; the epoch with the lowest validation loss is saved."""
    from sglang_stop.models import load_model

    model, tok = load_model(_base_path(base), device="cpu", dtype="float32")
    for q in model.parameters():
        q.requires_grad_(False)
    torch.manual_seed(seed)
    net = StopNet(StopNetConfig(num_assess_tokens=1, lora_r=lora_r, lora_alpha=2.0 * lora_r, lora_dropout=0.0), model)
    train = [r for r in records if not _is_val(r["problem_id"], val_fraction)]
    val = [r for r in records if _is_val(r["problem_id"], val_fraction)]
    if not train or not val:
        raise UserError(f"--labels: {len(train)} train / {len(val)} validation records; need both")
    opt = torch.optim.AdamW([q for q in net.parameters() if q.requires_grad], lr=lr)
    rng = random.Random(seed)

    def loss_of(batch: Sequence[dict[str, Any]]) -> torch.Tensor:
        s = torch.tensor([float(r["s_mc"]) for r in batch])
        logp = F.log_softmax(verifier_logits(net, model, [r["token_ids"] for r in batch]).float(), -1)
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


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m sglang_stop.scorers.verifier", description="train a Type II verifier")
    ap.add_argument("--labels", action="append", required=True, help="label JSONL (repeatable)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--base", default=TESTBED, help="model to copy: a HF dir, or 'testbed' (the embedded model)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--max-records", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    recs = [json.loads(line) for f in a.labels for line in Path(f).read_text().splitlines() if line.strip()]
    recs = [r for r in recs if "token_ids" in r][: a.max_records]
    print(train_verifier(recs, a.base, a.out, epochs=a.epochs, lr=a.lr, lora_r=a.lora_r))


if __name__ == "__main__":
    main()
