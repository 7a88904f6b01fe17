"""Battery rows: server (`sglang-stop run --server URL`): an unusable URL, nothing listening, a server that
is not SGLang, and one that fails mid-run each end in one line naming the server, exit 2."""

from __future__ import annotations

import atexit
from collections.abc import Callable
from pathlib import Path

from tests.battery import TESTBED, Case
from tests.server.fake import fake_server

RUN = ["sglang-stop", "run", "--task", "testbed", "--problems", "1", "--n", "2", "--prefix-len", "4", "--keep", "1"]
LABEL = ["sglang-stop", "label", "--problems", "1", "--out", "{tmp}/labels.jsonl"]
CALIBRATE = ["sglang-stop", "calibrate", "--task", "testbed", "--problems", "1", "--out", "{tmp}/calib.jsonl"]
NOWHERE = "http://127.0.0.1:1"  # nothing listens on loopback port 1
BOTH = "--server and --router: give one"


def _stand_in(mode: str) -> Callable[[Path], dict[str, str]]:
    """Setup: a stand-in server (tests/server/fake.py) in ``mode`` ("500": answers the model query, then
    fails every generation; "not-sglang": 404 everywhere); it lives in this test process until it exits."""

    def setup(_tmp: Path) -> dict[str, str]:
        cm = fake_server(mode, TESTBED)
        srv = cm.__enter__()
        atexit.register(cm.__exit__, None, None, None)
        return {"url": srv.url}

    return setup


ROWS: list[Case] = [
    Case("server-not-a-url", [*RUN, "--server", "127.0.0.1:30000"], 2,
         "--server '127.0.0.1:30000': expected a URL like http://HOST:PORT"),
    # Port 1 on loopback: nothing listens there (binding it needs root), so the URL is fixed.
    Case("server-connection-refused", [*RUN, "--server", "http://127.0.0.1:1"], 2,
         "server http://127.0.0.1:1: cannot connect: connection refused — is the server running?"),
    Case("server-not-sglang", [*RUN, "--server", "{url}"], 2,
         ": not an SGLang server (GET /get_model_info: HTTP 404)", setup=_stand_in("not-sglang")),
    Case("server-fails-mid-run", [*RUN, "--server", "{url}"], 2, ": POST /generate: HTTP 500: scheduler died",
         setup=_stand_in("500")),
    # --server repeatable / --router (run, label, calibrate)
    Case("run-server-and-router", [*RUN, "--server", NOWHERE, "--router", NOWHERE], 2, BOTH),
    Case("label-server-and-router", [*LABEL, "--server", NOWHERE, "--router", NOWHERE], 2, BOTH),
    Case("calibrate-server-and-router", [*CALIBRATE, "--server", NOWHERE, "--router", NOWHERE], 2, BOTH),
    Case("run-server-twice", [*RUN, "--server", NOWHERE, "--server", NOWHERE + "/"], 2,
         f"--server: {NOWHERE} given twice"),
    Case("run-router-not-a-url", [*RUN, "--router", "127.0.0.1:30000"], 2,
         "--router '127.0.0.1:30000': expected a URL like http://HOST:PORT"),
    Case("run-router-refused", [*RUN, "--router", NOWHERE], 2,
         f"router {NOWHERE}: GET /workers failed (ConnectionError) — is it an sglang-router?"),
    Case("label-server-refused", [*LABEL, "--server", NOWHERE], 2,
         f"server {NOWHERE}: cannot connect: connection refused — is the server running?"),
    Case("calibrate-server-refused", [*CALIBRATE, "--server", NOWHERE], 2,
         f"server {NOWHERE}: cannot connect: connection refused — is the server running?"),
    Case("label-server-not-a-url", [*LABEL, "--server", "localhost"], 2,
         "--server 'localhost': expected a URL like http://HOST:PORT"),
]
