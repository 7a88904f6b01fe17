"""STOP scoring cost: k [STOP] tokens over the cached prefix KV vs re-encoding the prefix first.

Both sides compute the same scores (checked); only the KV-reuse side is what the runtime does.
The paper's point: scoring reads the cache, so it costs ~k tokens per branch, not the prefix length.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from pydantic import BaseModel

from sglang_stop.backends.base import PrefixKV


class ScoringRow(BaseModel):
    prefix_len: int
    reuse_s: float
    reencode_s: float
    ratio: float
    max_abs_diff: float  # between the two ways' logits: they must agree


class ScoringBench(BaseModel):
    model: str
    k: int
    batch: int
    lora_r: int
    repeats: int
    rows: list[ScoringRow]


def _best_of(fns: Sequence[Callable[[], Any]], repeats: int) -> list[tuple[float, Any]]:
    """Each function's best time and last output, the functions taking turns within every repeat: this
    machine's speed drifts by a third over tens of seconds, so a ratio of two timings made one after the
    other (best of 10 each) swung from 0.021 to 0.038 between runs of one command."""
    best: list[float] = [float("inf")] * len(fns)
    outs: list[Any] = [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            outs[i] = fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return list(zip(best, outs))


def _cached_prefixes(model: Any, ids: torch.Tensor) -> tuple[list[list[int]], list[PrefixKV]]:
    """The prefixes and the KV caches the runtime already holds for them (building them is not timed)."""
    kvs = []
    for row in ids:
        out = model(row[None].to(next(model.parameters()).device), use_cache=True)
        kvs.append(PrefixKV(token_ids=row.tolist(), past=tuple((ly.keys, ly.values) for ly in out.past_key_values.layers)))
    return [r.tolist() for r in ids], kvs


@torch.inference_mode()
def run_scoring_bench(
    model: Any,
    model_name: str,
    prefix_lens: list[int],
    *,
    k: int = 4,
    batch: int = 16,
    lora_r: int = 16,
    repeats: int = 3,
    checkpoint: str | None = None,
    seed: int = 0,
) -> ScoringBench:
    from sglang_stop.scorers.stop import StopNet, StopNetConfig, load_checkpoint

    if checkpoint:
        net = load_checkpoint(checkpoint, model)
    else:  # an untrained net costs exactly what a trained one does
        torch.manual_seed(seed)
        net = StopNet(StopNetConfig(num_assess_tokens=k, lora_r=lora_r, lora_alpha=2.0 * lora_r), model).eval()
        for b in net.lora_B:
            torch.nn.init.normal_(b, std=0.02)
    net = net.to(next(model.parameters()).device)
    vocab = model.config.get_text_config().vocab_size
    g = torch.Generator().manual_seed(seed)
    rows = []
    for L in prefix_lens:
        prefixes, kvs = _cached_prefixes(model, torch.randint(10, vocab, (batch, L), generator=g))
        _best_of([lambda: net.logits_from_prefix_kvs(model, kvs[:2])], 1)  # warm-up
        (reuse_s, a), (reencode_s, b) = _best_of(
            [lambda: net.logits_from_prefix_kvs(model, kvs), lambda: net.logits_from_ids(model, prefixes)], repeats)
        rows.append(
            ScoringRow(
                prefix_len=L, reuse_s=reuse_s, reencode_s=reencode_s, ratio=reuse_s / reencode_s,
                max_abs_diff=float((a - b).abs().max()),
            )
        )
    return ScoringBench(model=model_name, k=net.cfg.num_assess_tokens, batch=batch, lora_r=net.cfg.lora_r,
                        repeats=repeats, rows=rows)


def scoring_text(b: ScoringBench) -> str:
    """Each prefix length: STOP over the cached KV vs re-encoding, and the k/Lp floor of that ratio."""
    from sglang_stop.tables import table

    rows = [[r.prefix_len, r.reuse_s * 1000, r.reencode_s * 1000, r.ratio, b.k / r.prefix_len, r.max_abs_diff]
            for r in b.rows]
    return (f"bench scoring: {b.model}, k={b.k}, batch {b.batch}, best of {b.repeats}\n"
            + table(["prefix", "reuse ms", "re-encode ms", "ratio", "floor k/Lp", "max |diff|"], rows))


class VerifierCost(BaseModel):
    """Type II vs Type IV at one prune point: the verifier re-encodes prompt + prefix with its own model
    copy; STOP runs its k [STOP] tokens over the cached KV. ``ratio`` = verifier / STOP (expect >> 1)."""

    model: str
    tokens: int  # prompt + prefix tokens per path
    batch: int
    repeats: int
    stop_s: float
    verifier_s: float
    ratio: float


@torch.inference_mode()
def run_verifier_cost(
    model: Any, model_name: str, stop_checkpoint: str, verifier_checkpoint: str, tokens: int,
    *, batch: int = 16, repeats: int = 5, seed: int = 0,
) -> VerifierCost:
    from sglang_stop.scorers.stop import load_checkpoint
    from sglang_stop.scorers.verifier import load_verifier, verifier_logits

    net = load_checkpoint(stop_checkpoint, model)
    vnet, vmodel = load_verifier(verifier_checkpoint, device=str(next(model.parameters()).device))
    vocab = model.config.get_text_config().vocab_size
    prefixes, kvs = _cached_prefixes(model, torch.randint(1, vocab, (batch, tokens), generator=torch.Generator().manual_seed(seed)))
    _best_of([lambda: (net.logits_from_prefix_kvs(model, kvs[:2]), verifier_logits(vnet, vmodel, prefixes[:2]))], 1)
    (stop_s, _), (ver_s, _) = _best_of(
        [lambda: net.logits_from_prefix_kvs(model, kvs), lambda: verifier_logits(vnet, vmodel, prefixes)], repeats)
    return VerifierCost(model=model_name, tokens=tokens, batch=batch, repeats=repeats, stop_s=stop_s, verifier_s=ver_s,
                        ratio=ver_s / stop_s)


def verifier_cost_text(c: VerifierCost) -> str:
    return (f"scoring cost at {c.tokens} tokens per path, batch {c.batch}, best of {c.repeats} ({c.model}): "
            f"STOP over cached KV {c.stop_s * 1000:.2f} ms, verifier re-encoding {c.verifier_s * 1000:.2f} ms, "
            f"ratio {c.ratio:.2f}")
