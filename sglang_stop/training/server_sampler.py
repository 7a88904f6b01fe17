"""``sampler(prompts, params, seed)`` over SGLang servers' native ``/generate`` (``label --server/--router``).

Rows that share their token ids (a problem's P prefix draws; a prefix's K continuations) are one group:
its ids are committed once (a prefill-only request, so the radix cache holds them), then each row is
its own request with its own seed, so all K continuations reuse the prefix's KV (``cached_tokens``,
counted in :class:`CacheStats`). A group goes to one worker (``Fleet.worker_for`` its ids; through a
router, with the routing key). A worker that fails a group (no reply, 5xx) is marked dead and the group
is redone on another; with none left, or through a router, the ServerError (one line) ends the run: the
records already appended stay, and a rerun resumes.

Seeds: SGLang honours ``sampling_seed`` only on a server launched with ``--enable-deterministic-inference``
(0.5.23: otherwise every draw is fresh). It is sent anyway, distinct per row, so such a server makes a
labels file reproducible.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from pydantic import BaseModel

from sglang_stop.backends.endpoint import ServerError
from sglang_stop.backends.fleet import Fleet, WorkerEndpoint
from sglang_stop.training.hf_sampler import SampleParams

RETRYABLE = (0, 500, 502, 503, 504)  # no reply at all, or a server-side failure


class CacheStats(BaseModel):
    """Continuation requests only (commits excluded): how much of their input the cache already held."""

    requests: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0

    @property
    def fraction(self) -> float:
        return self.cached_tokens / self.input_tokens if self.input_tokens else 0.0


class ServerSampler:
    """Samples on a :class:`Fleet`; ``eos_ids`` are stripped from the end of each output."""

    def __init__(self, fleet: Fleet, *, concurrency: int = 64, timeout_s: float = 600.0) -> None:
        self.fleet = fleet
        urls = [fleet.router] if fleet.router else fleet.workers
        self.endpoints = {u: WorkerEndpoint(u, timeout_s=timeout_s) for u in urls}
        self.first = next(iter(self.endpoints.values()))
        # groups and their rows on separate pools: a group waits on its rows, so one pool could deadlock
        self.pool = ThreadPoolExecutor(max_workers=max(1, concurrency // 4), thread_name_prefix="sglang-stop-group")
        self.row_pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sglang-stop-sample")
        self.stats = CacheStats()
        self._lock = threading.Lock()

    @property
    def tokenizer(self):  # noqa: ANN201 (a transformers tokenizer)
        return self.first.tokenizer

    def identity(self) -> dict[str, str]:
        return {"name": self.first.get_model_name()}

    def __call__(self, prompts: Sequence[Sequence[int]], params: SampleParams, seed: int) -> list[list[int]]:
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault(tuple(p), []).append(i)
        out: list[list[int]] = [[] for _ in prompts]
        futures = [self.pool.submit(self._group, list(ids), rows, params, seed) for ids, rows in groups.items()]
        for f in futures:
            for i, ids in f.result():
                out[i] = ids
        return out

    def _group(self, ids: list[int], rows: list[int], params: SampleParams, seed: int) -> list[tuple[int, list[int]]]:
        key = hashlib.blake2b(str(ids).encode(), digest_size=8).hexdigest()
        while True:
            url = self.fleet.router or self.fleet.worker_for(key)
            ep = self.endpoints[url]
            try:
                with ep.routing.routing_key(key):
                    ep.post("/generate", {"input_ids": ids, "sampling_params": {"max_new_tokens": 0}})
                    futures = [self.row_pool.submit(self._one, ep, ids, params, _row_seed(seed, r), key) for r in rows]
                    return [(r, f.result()) for r, f in zip(rows, futures)]
            except ServerError as e:
                # Another group may have marked this worker dead a moment ago (it failed their requests too):
                # what matters is whether a worker other than this one is left, not how many are live now.
                if self.fleet.router or e.status not in RETRYABLE or not [w for w in self.fleet.live() if w != url]:
                    raise
                self.fleet.dead.add(url)  # its groups move to the others; the rest stay where they are

    def _one(self, ep: WorkerEndpoint, ids: list[int], params: SampleParams, seed: int, key: str) -> list[int]:
        sp: dict[str, object] = {"max_new_tokens": params.max_new_tokens, "temperature": params.temperature,
                                 "top_p": params.top_p, "top_k": params.top_k}
        if params.temperature > 0:
            sp["sampling_seed"] = seed
        with ep.routing.routing_key(key):
            obj = ep.post("/generate", {"input_ids": ids, "sampling_params": sp})
        if not isinstance(obj, dict) or not isinstance(obj.get("meta_info"), dict):
            raise ServerError(f"server {ep.base_url}: POST /generate: not an SGLang reply")
        meta = obj["meta_info"]
        out = [int(t) for t in obj.get("output_ids") or []]
        matched = (meta.get("finish_reason") or {}).get("matched")
        if isinstance(matched, int) and out and out[-1] == matched:
            out = out[:-1]  # the EOS / stop token, as HFSampler strips it
        with self._lock:
            self.stats.requests += 1
            self.stats.input_tokens += len(ids)
            self.stats.cached_tokens += int(meta.get("cached_tokens", 0))
        return out

    def shutdown(self) -> None:
        for pool in (self.pool, self.row_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        for ep in self.endpoints.values():
            ep.shutdown()


def _row_seed(seed: int, row: int) -> int:
    return int(hashlib.blake2b(f"{seed}|{row}".encode(), digest_size=7).hexdigest(), 16)
