"""Decode throughput of the in-process backend at 1 branch vs N branches of one fork.

Shows that forked branches decode as one batch (continuous batching across SGLang's per-branch
threads) rather than one thread at a time.
"""

from __future__ import annotations

import time
from typing import Any

import sglang as sgl
from pydantic import BaseModel


class DecodeBench(BaseModel):
    branches: list[int]
    tokens: list[int]
    wall_s: list[float]
    tokens_per_s: list[float]
    speedup_vs_1: list[float]
    max_batch_seen: int


@sgl.function
def _fan_out(s: Any, prompt: str, branches: int, max_tokens: int) -> None:
    s += prompt
    s.stream_executor.sync()
    forks = s.fork(branches)
    forks += sgl.gen("out", max_tokens=max_tokens, temperature=1.0, ignore_eos=True)
    forks.join()


def run_decode_bench(backend: Any, prompt: str, branches: list[int], max_tokens: int = 64) -> DecodeBench:
    _fan_out.run(prompt=prompt, branches=2, max_tokens=4, backend=backend)  # warm-up
    toks, walls = [], []
    for n in branches:
        before = backend.usage().generated_tokens
        t0 = time.perf_counter()
        _fan_out.run(prompt=prompt, branches=n, max_tokens=max_tokens, backend=backend)
        walls.append(time.perf_counter() - t0)
        toks.append(backend.usage().generated_tokens - before)
    tps = [t / w for t, w in zip(toks, walls)]
    return DecodeBench(
        branches=branches, tokens=toks, wall_s=walls, tokens_per_s=tps,
        speedup_vs_1=[x / tps[0] for x in tps], max_batch_seen=backend.max_batch_seen,
    )


def decode_text(b: DecodeBench) -> str:
    from sglang_stop.tables import table

    rows = [[n, t, round(w, 2), round(tps, 1), round(sp, 2)]
            for n, t, w, tps, sp in zip(b.branches, b.tokens, b.wall_s, b.tokens_per_s, b.speedup_vs_1)]
    return (f"bench decode (largest decode batch seen: {b.max_batch_seen})\n"
            + table(["branches", "tokens", "wall s", "tokens/s", "vs 1 branch"], rows))
