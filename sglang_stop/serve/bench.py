"""Throughput of `sglang-stop serve` at several client concurrencies, over real HTTP on loopback.

Starts the server in this process (uvicorn on a free 127.0.0.1 port), sends ``requests`` completions
per level from that many client threads, and reports requests/s, mean latency and the decode batch
size the backend reached at that level (``LocalBackend.max_batch_seen``, reset per level).

    python -m sglang_stop.serve.bench --config configs/testbed.yaml --levels 1,8,32
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import click

from sglang_stop.errors import UserError, positive_ints

PROMPTS = ["Q4-8-8=", "Q1+2+3=", "Q9-4+7=", "Q5+5-2=", "Q3-9-1=", "Q8+1+1=", "Q2-7+4=", "Q6+3-8="]


def measure(url: str, backend: Any, level: int, requests: int, prompts: list[str],
            answers: dict[int, tuple[str, int]] | None = None) -> dict[str, Any]:
    """One level: ``requests`` completions from ``level`` threads; every answer must be well formed.
    ``answers`` (if given) receives each request's (text, completion tokens) by request number."""
    import httpx

    if hasattr(backend, "max_batch_seen"):
        backend.max_batch_seen = 0
    lat: list[float] = []
    tokens = [0]
    lock = threading.Lock()

    def one(i: int) -> None:
        t0 = time.perf_counter()
        r = httpx.post(url + "/v1/completions", json={"prompt": prompts[i % len(prompts)], "seed": i}, timeout=600)
        if r.status_code != 200:
            raise RuntimeError(f"request {i}: HTTP {r.status_code}: {r.text[:200]}")
        body = r.json()
        usage = body["usage"]
        if usage["completion_tokens"] != sum(p["tokens"] for p in usage["sglang_stop"]["paths"]):
            raise RuntimeError(f"request {i}: completion_tokens is not the sum of its paths' tokens")
        with lock:
            lat.append(time.perf_counter() - t0)
            tokens[0] += usage["completion_tokens"]
            if answers is not None:
                answers[i] = (body["choices"][0]["text"], usage["completion_tokens"])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(level) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - t0
    return {"concurrency": level, "requests": requests, "wall_s": round(wall, 2),
            "requests_per_s": round(requests / wall, 3), "mean_latency_s": round(sum(lat) / len(lat), 2),
            "tokens_per_s": round(tokens[0] / wall, 1), "max_decode_batch": getattr(backend, "max_batch_seen", None)}


@click.command()
@click.option("--config", default="configs/testbed.yaml", show_default=True)
@click.option("--model", default=None)
@click.option("--levels", default="1,8,32", show_default=True, help="client concurrencies")
@click.option("--requests", "per_level", type=click.IntRange(min=1), default=None,
              help="requests per level (default: max(8, 2 x level))")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch CPU threads")
@click.option("--check", is_flag=True, help="rerun the last level's requests one at a time: each must give the same "
              "text and tokens as under concurrency")
@click.option("--json", "as_json", is_flag=True)
def bench_cmd(config: str, model: str | None, levels: str, per_level: int | None, threads: int, check: bool,
              as_json: bool) -> None:
    """Requests/s of the server at each client concurrency, and the decode batch size reached."""
    import torch

    from sglang_stop.serve.background import serving
    from sglang_stop.serve.server import build_server
    from sglang_stop.tables import table

    lv = positive_ints("--levels", levels)
    torch.set_num_threads(threads)
    engine, app = build_server(config, model, (), max(lv))
    try:
        with serving(app) as url:
            measure(url, engine.backends[0], 1, 1, PROMPTS)  # warm-up
            together: dict[int, tuple[str, int]] = {}
            rows = [measure(url, engine.backends[0], c, per_level or max(8, 2 * c), PROMPTS,
                            together if k == len(lv) - 1 else None) for k, c in enumerate(lv)]
            if check:
                alone: dict[int, tuple[str, int]] = {}
                measure(url, engine.backends[0], 1, len(together), PROMPTS, alone)
                differ = sorted(i for i in together if together[i] != alone[i])
                rows[-1]["same_as_alone"] = f"{len(together) - len(differ)}/{len(together)}"
    finally:
        engine.backends[0].shutdown()
    if as_json:
        click.echo(json.dumps({"model": engine.model_name, "n": engine.cfg.n, "scorer": engine.cfg.scorer.name,
                               "levels": rows}))
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    click.echo(table(keys, [[r.get(k) for k in keys] for r in rows],
                     title=f"sglang-stop serve: {engine.model_name}, n={engine.cfg.n}, scorer {engine.cfg.scorer.name}"))


if __name__ == "__main__":
    try:  # the CLIs' policy for a user error (one line, exit 2); cli_errors sits above this layer
        bench_cmd.main(standalone_mode=False)
    except (UserError, click.UsageError) as e:
        click.echo(f"error: {e.format_message() if isinstance(e, click.UsageError) else e}", err=True)
        raise SystemExit(2) from None
