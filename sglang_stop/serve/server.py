"""Building the server from the command's inputs: checks first (flags, config, model directory), then the
model (or the servers), the task and the engine; shared by `sglang-stop serve`, the bench and the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sglang_stop.errors import UserError, warn


def build_server(config: str | None, model: str | None, servers: tuple[str, ...], max_concurrent: int,
                 retry_after: int = 1, **overrides: Any) -> tuple[Any, Any]:
    """The engine and app (checks first, then loads the model or connects to the servers);
    ``overrides`` are config fields as :func:`sglang_stop.api.build_config` takes them."""
    if model is not None and servers:
        raise UserError("--model: not with --server (each server runs its own model)")
    if max_concurrent < 1:
        raise UserError(f"--max-concurrent: must be >= 1, got {max_concurrent}")
    if config is not None and not Path(config).exists():
        raise UserError(f"--config {config}: config file not found")
    from sglang_stop.api import build_config  # torch, transformers: after the checks that need neither
    from sglang_stop.serve.app import create_app
    from sglang_stop.serve.engine import Engine
    from sglang_stop.serve.metrics import Metrics
    from sglang_stop.tasks import load_task

    cfg = build_config(config, model=model, **overrides)
    if servers and cfg.model.path is not None:
        warn(f"model.path {cfg.model.path} of the config is ignored with --server (each server runs its own model)")
    if not servers and cfg.model.path is not None and not Path(cfg.model.path).is_dir():
        raise UserError(f"model.path: {cfg.model.path}: no such directory")
    task = load_task(cfg.task or "default")
    if servers:
        from sglang_stop.backends.endpoint import StopEndpoint

        backends: list[Any] = [StopEndpoint(url) for url in servers]
    else:
        from sglang_stop.runner import make_backend

        backends = [make_backend(cfg.model)]
    metrics = Metrics()
    try:
        engine = Engine(cfg, backends, task, max_concurrent=max_concurrent, retry_after_s=retry_after,
                        stats=metrics.stats())
    except BaseException:
        for b in backends:
            b.shutdown()
        raise
    return engine, create_app(engine, metrics)
