"""Type II of the paper's taxonomy (external, learnable): a PRM-style verifier that re-encodes each prefix.

A separate model, a second copy of the base with its own LoRA (on every position) and a Linear(hidden, 2)
head on the last token, is trained on the same Monte Carlo labels as STOP. At a prune point it reads the
path from scratch (prompt + prefix token ids; the copy shares the base's tokenizer), as process reward
models do; STOP instead runs k [STOP] tokens over the KV cache the generating model already holds. That
difference is the cost `bench scoring` measures.

Checkpoint: the STOP layout (``scorers/stop/checkpoint.py``: adapter, head, base identity; the [STOP]
vector is unused) plus ``verifier.json`` naming the base to copy (``"testbed"`` = the embedded model).
Train: ``sglang-stop train-verifier --labels L.jsonl --out DIR`` (``training/verifier.py``; label records as
``sglang-stop label`` writes them; split by problem; the epoch with the best validation loss is kept).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from sglang_stop.errors import UserError
from sglang_stop.padding import left_pad
from sglang_stop.scorers.base import Branch, ScoreContext, Scorer, ScorerOptions
from sglang_stop.scorers.stop import StopNet, decoder_of, load_checkpoint

VERIFIER_FILE = "verifier.json"
TESTBED = "testbed"


def verifier_logits(net: StopNet, model: Any, seqs: Sequence[Sequence[int]], pad_id: int = 0) -> torch.Tensor:
    """Re-encode each sequence (left-padded batch) with the LoRA active on every position; logits of the
    head on the last token's final hidden state, ``[B, 2]``."""
    ids, mask, pos = left_pad(seqs, pad_id, next(model.parameters()).device)
    with net.lora_active(model):
        h = decoder_of(model)(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state[:, -1]
    return net.head(h.to(net.head.weight.dtype))


def check_base(spec: str) -> None:
    """One UserError naming ``--base`` unless it is a model dir, a model name or ``testbed``."""
    from sglang_stop.models import is_model_name

    if spec != TESTBED and not is_model_name(spec) and not Path(spec).is_dir():
        raise UserError(f"--base: {spec}: not a model directory, a model name or 'testbed'")


def base_path(spec: str) -> str:
    """A verifier's base: a HF model dir, a model name (``load_model`` resolves it), or ``testbed``."""
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
    model, _ = load_model(base_path(base), device=device, dtype="float32")
    return load_checkpoint(p, model), model


class VerifierOptions(ScorerOptions):
    checkpoint: str = Field(..., description="verifier checkpoint directory (sglang-stop train-verifier)")
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
