"""A stand-in SGLang server on 127.0.0.1 (stdlib http.server, a thread) that fails on purpose.

It answers ``/get_model_info`` and ``/tokenize`` like SGLang, then fails ``/generate`` and ``/stop/score``
the way a dying or broken server does, so the endpoint's failure messages are tested in seconds without
starting the real server. ``mode``: ``"500"`` (an error reply), ``"drop"`` (close the connection without
a reply), ``"die"`` (drop, and stop listening: later requests are refused), ``"slow"`` (no reply for
``slow_s``), ``"not-sglang"`` (404 everywhere), ``"no-plugin"`` (404 on the plugin's routes only).
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

MODES = ("500", "drop", "die", "slow", "not-sglang", "no-plugin")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, mode: str, model_path: Path, slow_s: float) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: one of {MODES}")
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode, self.model_path, self.slow_s = mode, model_path, slow_s
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
        body = json.loads(self.rfile.read(n) or b"{}")
        self._route(body)

    def _route(self, body: Any = None) -> None:
        srv, path = self.server, self.path
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
def fake_server(mode: str, model_path: Path, *, slow_s: float = 30.0) -> Iterator[FakeServer]:
    srv = FakeServer(mode, model_path, slow_s)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.released.set()
        srv.shutdown()
        srv.server_close()
        t.join(timeout=10)
