"""A stand-in SGLang server on 127.0.0.1 (stdlib http.server, a thread) that fails on purpose.

It answers ``/get_model_info`` and ``/tokenize`` like SGLang, then fails ``/generate`` and ``/stop/score``
the way a dying or broken server does, so the endpoint's failure messages are tested in seconds without
starting the real server. ``mode``: ``"500"`` (an error reply), ``"drop"`` (close the connection without
a reply), ``"die"`` (drop, and stop listening: later requests are refused), ``"slow"`` (no reply for
``slow_s``), ``"not-sglang"`` (404 everywhere), ``"no-plugin"`` (404 on the plugin's routes only), or
``"proxy"``: forward everything to ``upstream`` (the real server) until the ``die_after``-th ``/generate``,
then die as ``"die"`` does: the real server, as its client sees it, dies mid-run.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MODES = ("500", "drop", "die", "slow", "not-sglang", "no-plugin", "proxy")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, mode: str, model_path: Path | None, slow_s: float, upstream: str | None = None,
                 die_after: int = 1) -> None:
        if mode not in MODES or (mode == "proxy") != (upstream is not None):
            raise ValueError(f"mode {mode!r}: one of {MODES}; upstream goes with 'proxy' only")
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode, self.model_path, self.slow_s = mode, model_path, slow_s
        self.upstream, self.die_after = upstream, die_after
        self._lock = threading.Lock()
        self.paths: list[str] = []  # every request path, in order
        self.released = threading.Event()  # ends "slow" waits at teardown

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def die(self) -> None:
        """Stop listening (from a handler thread): later connections are refused."""
        threading.Thread(target=self.shutdown, daemon=True).start()
        self.socket.shutdown(socket.SHUT_RDWR)  # at once: close() alone waits for the serving thread's poll
        self.socket.close()


class _Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drop(self) -> None:
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        n = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(n)
        if self.server.mode == "proxy":
            return self._forward(raw)
        self._route(json.loads(raw or b"{}"))

    def _forward(self, raw: bytes | None = None) -> None:
        import requests

        srv = self.server
        with srv._lock:
            srv.paths.append(self.path)
            dies = self.path == "/generate" and srv.paths.count("/generate") >= srv.die_after
        if dies:
            srv.die()
            return self._drop()
        r = requests.request(self.command, srv.upstream + self.path, data=raw, timeout=300,
                             headers={"content-type": "application/json"})
        self.send_response(r.status_code)
        self.send_header("content-type", r.headers.get("content-type", "application/json"))
        self.send_header("content-length", str(len(r.content)))
        self.end_headers()
        self.wfile.write(r.content)

    def _route(self, body: Any = None) -> None:
        srv, path = self.server, self.path
        if srv.mode == "proxy":
            return self._forward()
        srv.paths.append(path)
        if srv.mode == "not-sglang":
            return self._reply(404, {"detail": "Not Found"})
        if path == "/get_model_info":
            return self._reply(200, {"model_path": str(srv.model_path), "tokenizer_path": str(srv.model_path)})
        if path == "/tokenize":
            return self._reply(200, {"tokens": [1 + ord(c) % 50 for c in body["prompt"]]})
        if srv.mode == "no-plugin":
            return self._reply(404, {"detail": "Not Found"})
        if srv.mode == "500":
            return self._reply(500, {"object": "error", "message": "scheduler died " + "x" * 5000, "code": 500})
        if srv.mode == "slow":
            srv.released.wait(srv.slow_s)
            return self._reply(200, {})
        if srv.mode == "die":
            srv.die()
        self._drop()


@contextmanager
def fake_server(mode: str, model_path: Path | None = None, *, slow_s: float = 30.0, upstream: str | None = None,
                die_after: int = 1) -> Iterator[FakeServer]:
    srv = FakeServer(mode, model_path, slow_s, upstream, die_after)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.released.set()
        srv.shutdown()
        srv.server_close()
        t.join(timeout=10)
