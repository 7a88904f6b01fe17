"""The ``stop`` scorer (Type IV, internal learnable): p(good) from a STOP checkpoint over cached prefix KV.

In process it asks the backend for each branch's cached KV (``ctx.backend.with_prefix_kv``) and runs
only the k [STOP] tokens on the backend's thread; against a server (``StopEndpoint``) one batched
``/stop/score`` call does the same inside SGLang, reusing the radix cache. Either way the prefix is never
re-encoded and the program never changes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import click
import torch
from pydantic import Field

from sglang_stop.errors import UserError
from sglang_stop.scorers.base import Branch, ScoreContext, Scorer, ScorerOptions
from sglang_stop.scorers.stop.checkpoint import load_checkpoint
from sglang_stop.scorers.stop.net import StopNet


class StopOptions(ScorerOptions):
    checkpoint: str | None = Field(
        None, description="STOP checkpoint directory (authors' layout); not needed against a server, which holds its own"
    )
    batch_size: int = Field(16, ge=1, description="branches scored per forward pass")


class StopScorer(Scorer):
    """Higher = more likely to end correct (softmax p(good) of the classifier head)."""

    name = "stop"
    Options = StopOptions
    nonnegative = True  # probabilities

    def __init__(self, options: ScorerOptions | None = None) -> None:
        super().__init__(options)
        self._nets: dict[int, StopNet] = {}  # id(model) -> the checkpoint loaded onto that model
        self._lock = threading.Lock()

    def net_for(self, model: Any) -> StopNet:
        """Load the checkpoint once per base model (checks it was trained for this model)."""
        with self._lock:
            key = id(model)
            if key not in self._nets:
                self._nets[key] = load_checkpoint(self.options.checkpoint, model)  # type: ignore[attr-defined]
            return self._nets[key]

    def prepare(self, backend: Any) -> None:
        """In process: load the checkpoint onto the backend's model now (missing, corrupt or made for
        another base -> UserError before decoding). A server holds its own adapter.

        The backend checks are ``hasattr``, not ``isinstance(backend, StopScoringBackend / PrefixKVBackend)``:
        serve's per-request backend delegates through ``__getattr__``, which Python 3.12+'s runtime
        Protocol checks do not see (they read attributes statically)."""
        if hasattr(backend, "stop_score"):
            if self.options.checkpoint is not None:  # type: ignore[attr-defined]
                click.echo(f"warning: scorer.options.checkpoint {self.options.checkpoint}: ignored against a server, "  # type: ignore[attr-defined]
                           "which scores with the adapter it was launched with", err=True)
            check = getattr(backend, "check_stop_adapter", None)
            if check is not None:  # a server without the plugin or the adapter fails here, before decoding
                check()
            return
        if self.options.checkpoint is None:  # type: ignore[attr-defined]
            raise UserError("scorer.options.checkpoint: the in-process stop scorer needs a checkpoint directory")
        model = getattr(backend, "model", None)
        if model is None or not hasattr(backend, "with_prefix_kv"):
            raise UserError(
                f"scorer.name: 'stop' needs a backend with prefix-KV access; {type(backend).__name__} has none"
            )
        self.net_for(model)

    def score_kvs(self, model: Any, kvs: Sequence[Any]) -> list[float]:
        """Runs on the backend's model thread; batches of ``batch_size`` branches."""
        net = self.net_for(model)
        bs = self.options.batch_size  # type: ignore[attr-defined]
        out: list[float] = []
        with torch.no_grad():
            for s in range(0, len(kvs), bs):
                logits = net.logits_from_prefix_kvs(model, kvs[s : s + bs])
                out.extend(torch.softmax(logits.float(), -1)[:, 1].tolist())
        return out

    def score(self, branches: Sequence[Branch], ctx: ScoreContext) -> list[float]:
        if not branches:
            return []
        backend = ctx.backend
        if hasattr(backend, "stop_score"):  # an SGLang server: the plugin scores with its own copy of the adapter
            return backend.stop_score([b.handle for b in branches])
        if self.options.checkpoint is None:  # type: ignore[attr-defined]
            raise UserError("scorer.options.checkpoint: the in-process stop scorer needs a checkpoint directory")
        if not hasattr(backend, "with_prefix_kv"):
            raise UserError(
                f"scorer.name: 'stop' needs a backend with prefix-KV access; {type(backend).__name__} has none"
            )
        return backend.with_prefix_kv([b.handle for b in branches], self.score_kvs)
