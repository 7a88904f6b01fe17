"""Decode throughput of the in-process backend at N branches of one fork, side by side with plain
Hugging Face ``model.generate(num_return_sequences=N)`` on the same model object in the same run.

Shows that forked branches decode as one batch (continuous batching across SGLang's per-branch
threads) and what the backend's per-step overhead costs against the library it wraps. Both sides
sample at temperature 1 with no top-k/top-p and decode exactly ``max_tokens`` per branch; the two
runs of each size alternate order, so load from other jobs hits both alike.
"""

from __future__ import annotations

import time
from typing import Any

import sglang as sgl
import torch
from pydantic import BaseModel


class DecodeBench(BaseModel):
    branches: list[int]
    tokens: list[int]
    wall_s: list[float]
    tokens_per_s: list[float]
    speedup_vs_1: list[float]
    max_batch_seen: int
    hf_tokens_per_s: list[float] | None = None  # model.generate(num_return_sequences=n), same run
    vs_hf: list[float] | None = None  # tokens_per_s / hf_tokens_per_s
    threads: int = 0


@sgl.function
def _fan_out(s: Any, prompt: str, branches: int, max_tokens: int) -> None:
    s += prompt
    s.stream_executor.sync()
    forks = s.fork(branches)
    forks += sgl.gen("out", max_tokens=max_tokens, temperature=1.0, ignore_eos=True)
    forks.join()


def _ours(backend: Any, prompt: str, n: int, max_tokens: int) -> tuple[int, float]:
    before = backend.usage().generated_tokens
    t0 = time.perf_counter()
    _fan_out.run(prompt=prompt, branches=n, max_tokens=max_tokens, backend=backend)
    return backend.usage().generated_tokens - before, time.perf_counter() - t0


def _hf(backend: Any, prompt: str, n: int, max_tokens: int) -> tuple[int, float]:
    """``generate`` on the backend's model thread (it owns the model); exactly ``max_tokens`` each."""
    def run() -> tuple[int, float]:
        ids = backend.tokenizer(prompt, return_tensors="pt").to(backend.device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = backend.model.generate(
                **ids, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, num_return_sequences=n,
                max_new_tokens=max_tokens, min_new_tokens=max_tokens,
                pad_token_id=backend.tokenizer.pad_token_id or backend.tokenizer.eos_token_id,
            )
        wall = time.perf_counter() - t0
        return int(out.shape[0] * (out.shape[1] - ids["input_ids"].shape[1])), wall

    return backend.call_in_model_thread(run)


def run_decode_bench(backend: Any, prompt: str, branches: list[int], max_tokens: int = 64,
                     hf: bool = True) -> DecodeBench:
    _fan_out.run(prompt=prompt, branches=2, max_tokens=4, backend=backend)  # warm-up
    if hf:
        _hf(backend, prompt, 2, 4)
    toks, walls, hf_tps = [], [], []
    for k, n in enumerate(branches):
        if hf and k % 2:
            hf_tps.append(_rate(*_hf(backend, prompt, n, max_tokens)))
        t, w = _ours(backend, prompt, n, max_tokens)
        toks.append(t)
        walls.append(w)
        if hf and not k % 2:
            hf_tps.append(_rate(*_hf(backend, prompt, n, max_tokens)))
    tps = [t / w for t, w in zip(toks, walls)]
    return DecodeBench(
        branches=branches, tokens=toks, wall_s=walls, tokens_per_s=tps,
        speedup_vs_1=[x / tps[0] for x in tps], max_batch_seen=backend.max_batch_seen,
        hf_tokens_per_s=hf_tps if hf else None, vs_hf=[a / b for a, b in zip(tps, hf_tps)] if hf else None,
        threads=torch.get_num_threads(),
    )


class StepProfile(BaseModel):
    branches: int
    wall_s: float
    forward_s: float  # inside model.forward
    sample_s: float  # the backend's sampling (masks, logprob records, the draw)
    other_s: float  # everything else: scheduling, cache bookkeeping, SGLang's threads


def profile_decode(backend: Any, prompt: str, branches: int, max_tokens: int = 64) -> StepProfile:
    """Where a fork's decode time goes: timers around ``model.forward`` and the backend's sampler
    for one run (both restored afterwards). ``python -m sglang_stop.bench.decode`` prints it."""
    spent = {"forward": 0.0, "sample": 0.0}

    def timed(fn: Any, key: str) -> Any:
        def inner(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[key] += time.perf_counter() - t
        return inner

    model = backend.model
    own_forward = vars(model).get("forward")  # an instance-level forward (e.g. a hook) to put back
    model.forward = timed(model.forward, "forward")
    backend._sample_rows = timed(backend._sample_rows, "sample")
    try:
        _fan_out.run(prompt=prompt, branches=2, max_tokens=4, backend=backend)
        spent.update(forward=0.0, sample=0.0)
        _, wall = _ours(backend, prompt, branches, max_tokens)
    finally:
        del backend._sample_rows  # the instance attribute shadowed the method
        if own_forward is None:
            del model.forward
        else:
            model.forward = own_forward
    return StepProfile(branches=branches, wall_s=wall, forward_s=spent["forward"], sample_s=spent["sample"],
                       other_s=wall - spent["forward"] - spent["sample"])


def _rate(tokens: int, wall: float) -> float:
    return tokens / wall


def decode_text(b: DecodeBench) -> str:
    from sglang_stop.tables import table

    head = ["branches", "tokens", "wall s", "tokens/s", "vs 1 branch"]
    rows = [[n, t, round(w, 2), round(tps, 1), round(sp, 2)]
            for n, t, w, tps, sp in zip(b.branches, b.tokens, b.wall_s, b.tokens_per_s, b.speedup_vs_1)]
    if b.hf_tokens_per_s is not None and b.vs_hf is not None:
        head += ["HF generate tokens/s", "in-process / HF"]
        rows = [row + [round(h, 1), round(r, 2)] for row, h, r in zip(rows, b.hf_tokens_per_s, b.vs_hf)]
    return (f"bench decode ({b.threads} torch threads; largest decode batch seen: {b.max_batch_seen}; "
            "HF = model.generate(num_return_sequences=branches), same model, same run)\n"
            + table(head, rows))


if __name__ == "__main__":  # profile: python -m sglang_stop.bench.decode [--model DIR] [--branches 16] [--threads 1]
    import argparse

    from sglang_stop.config import ModelSpec
    from sglang_stop.runner import make_backend

    ap = argparse.ArgumentParser(description=profile_decode.__doc__)
    ap.add_argument("--model", default=None)
    ap.add_argument("--branches", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    be = make_backend(ModelSpec(path=args.model))
    try:
        print(profile_decode(be, "Count slowly from one to fifty:", args.branches, args.tokens).model_dump_json())
    finally:
        be.shutdown()
