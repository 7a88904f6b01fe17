"""Battery rows: `sglang-stop serve` refuses bad flags before the model loads (one line, exit 2)."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.battery import Case


def _busy_port(_tmp: Path) -> dict[str, str]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    _busy_port.keep = s  # type: ignore[attr-defined]  # held open for the row's lifetime
    return {"port": str(s.getsockname()[1])}


ROWS: list[Case] = [
    Case("serve-config-missing", ["sglang-stop", "serve", "--config", "{tmp}/nope.yaml"], 2, "config file not found"),
    Case("serve-model-with-server", ["sglang-stop", "serve", "--model", "{testbed}", "--server",
                                     "http://127.0.0.1:1"], 2, "--model"),
    Case("serve-port-0", ["sglang-stop", "serve", "--port", "0"], 2, "'--port'"),
    Case("serve-port-busy", ["sglang-stop", "serve", "--config", "configs/testbed.yaml", "--port", "{port}"], 2,
         "address already in use", setup=_busy_port, timeout=120),
]
