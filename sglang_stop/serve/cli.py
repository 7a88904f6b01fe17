"""`sglang-stop serve`: the click command (registered by the main CLI) and ``python -m sglang_stop.serve``.

Everything checkable (config, model directory, flags, the port being free, the scorer's checkpoint
against the model) is checked before the server accepts a connection; a bad one is one ``error:`` line
and exit 2 (the CLIs' one policy, ``cli_errors.run_cli_group``).
"""

from __future__ import annotations

import errno
import signal
import socket
import sys
from types import FrameType

import click

from sglang_stop.cli_errors import run_cli_group
from sglang_stop.errors import UserError, warn
from sglang_stop.signals import EXIT_CODES


def check_port(host: str, port: int) -> None:
    """Refuse a port something already listens on now, not after the model has loaded."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UserError(f"--host {host}: cannot resolve ({e.strerror})") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            why = "address already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
            raise UserError(f"--port {port}: cannot listen on {host}: {why}") from None


def _graceful_server_class() -> type:
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """SIGINT/SIGTERM stop the server gracefully (open requests are answered); the command then
        exits 130/143 itself instead of uvicorn re-raising the signal into the CLI's handlers."""

        stop_signal: int | None = None

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            self.stop_signal = sig
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    return GracefulServer


@click.command("serve")
@click.option("--config", default=None, help="runtime config (YAML/JSON); default: the packaged one")
@click.option("--model", default=None, help="local HF model directory (overrides model.path); default: embedded")
@click.option("--server", "servers", multiple=True, metavar="URL",
              help="an SGLang server with the sglang-stop plugin (repeatable; one request's paths go to one server)")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--max-concurrent", type=int, default=32, show_default=True,
              help="requests run at once; beyond it a 429 with Retry-After")
@click.option("--retry-after", type=click.IntRange(1, 3600), default=1, show_default=True,
              help="seconds the 429's Retry-After header asks for")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True)
def serve_cmd(config: str | None, model: str | None, servers: tuple[str, ...], host: str, port: int,
              max_concurrent: int, retry_after: int, threads: int | None, log_level: str) -> None:
    """Serve the OpenAI API (chat/completions) with pruned parallel reasoning per request."""
    import uvicorn

    if threads is not None and servers:
        warn("--threads is ignored with --server (no model runs in this process)")
    elif threads is not None:
        import torch

        torch.set_num_threads(threads)
    check_port(host, port)
    from sglang_stop.serve.server import build_server

    engine, app = build_server(config, model, servers, max_concurrent, retry_after)
    click.echo(f"sglang-stop serve: model {engine.model_name!r}, n={engine.cfg.n}, scorer {engine.cfg.scorer.name}, "
               f"on http://{host}:{port}/v1 (max {max_concurrent} concurrent requests)", err=True)
    server = _graceful_server_class()(uvicorn.Config(app, host=host, port=port, log_level=log_level))
    try:
        server.run()
    finally:
        for b in engine.backends:
            b.shutdown()
    if server.stop_signal is not None:
        name = signal.Signals(server.stop_signal).name
        click.echo(f"sglang-stop serve: stopped by {name} (open requests were answered first)", err=True)
        sys.exit(EXIT_CODES.get(name, 130))


def main(argv: list[str] | None = None) -> None:
    run_cli_group(serve_cmd, argv)


if __name__ == "__main__":
    main()
