"""Prometheus metrics of the server, on a registry of its own (two apps in one process, as in the
tests, must not share counters): requests, paths launched/pruned, tokens sampled/saved, scoring
time, requests in flight and the backend's queue depth (generate calls waiting or decoding)."""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sglang_stop.serve.engine import Stats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("sglang_stop_requests", "HTTP requests by route and outcome", ["route", "status"],
                                registry=r)
        self.paths_launched = Counter("sglang_stop_paths_launched", "reasoning paths launched", registry=r)
        self.paths_pruned = Counter("sglang_stop_paths_pruned", "paths pruned by the scorer", registry=r)
        self.tokens_sampled = Counter("sglang_stop_tokens_sampled", "tokens sampled, all paths", registry=r)
        self.tokens_saved = Counter("sglang_stop_tokens_saved",
                                    "tokens an unpruned run would have sampled in addition (estimate)", registry=r)
        self.scoring = Histogram("sglang_stop_scoring_seconds", "time of one scorer call (one prune point)",
                                 registry=r, buckets=(0.001, 0.005, 0.02, 0.1, 0.5, 2.0, 10.0))
        self.latency = Histogram("sglang_stop_request_seconds", "time to answer a completion request", registry=r,
                                 buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300))
        self.in_flight = Gauge("sglang_stop_requests_in_flight", "requests admitted and running", registry=r)
        self.queue_depth = Gauge("sglang_stop_queue_depth", "generate calls waiting or decoding in the backend",
                                 registry=r)
        self.live_branches = Gauge("sglang_stop_live_branches", "branches holding KV in the backend", registry=r)
        self._depth = 0
        self._lock = threading.Lock()

    def stats(self) -> Stats:
        return Stats(on_scoring=self.scoring.observe, on_generate=self._generate)

    def _generate(self, delta: int) -> None:
        with self._lock:
            self._depth += delta
            self.queue_depth.set(self._depth)

    def record_usage(self, usage: Any) -> None:
        ext = usage.sglang_stop
        self.paths_launched.inc(ext.paths_launched)
        self.paths_pruned.inc(ext.paths_pruned)
        self.tokens_sampled.inc(usage.completion_tokens)
        self.tokens_saved.inc(max(0, ext.tokens_saved_estimate))

    def render(self, in_flight: int, live_branches: int) -> bytes:
        self.in_flight.set(in_flight)
        self.live_branches.set(live_branches)
        return generate_latest(self.registry)
