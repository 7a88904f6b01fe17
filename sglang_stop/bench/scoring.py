"""STOP scoring cost: k [STOP] tokens over the cached prefix KV vs re-encoding the prefix first.

Both sides compute the same scores (checked); only the KV-reuse side is what the runtime does.
The paper's point: scoring reads the cache, so it costs ~k tokens per branch, not the prefix length.
"""

from __future__ import annotations

import time
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


def _best_of(fn: Any, repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


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
        ids = torch.randint(10, vocab, (batch, L), generator=g)
        kvs = []
        for row in ids:  # the runtime already holds these caches; building them is not timed
            out = model(row[None].to(next(model.parameters()).device), use_cache=True)
            kvs.append(PrefixKV(token_ids=row.tolist(), past=tuple((ly.keys, ly.values) for ly in out.past_key_values.layers)))
        prefixes = [r.tolist() for r in ids]
        _best_of(lambda: net.logits_from_prefix_kvs(model, kvs[:2]), 1)  # warm-up
        reuse_s, a = _best_of(lambda: net.logits_from_prefix_kvs(model, kvs), repeats)
        reencode_s, b = _best_of(lambda: net.logits_from_ids(model, prefixes), repeats)
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
