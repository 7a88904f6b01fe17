"""`sglang-stop run --server URL` when the server dies mid-run: the real server behind a proxy
(tests/server/fake.py) that dies after a few generations. The run ends at once with one line naming
the server, exit 2; the real server behind the proxy is unharmed."""

from __future__ import annotations

import re

import pytest
import requests

from fake import fake_server
from tests.battery import error_lines, run_cli

pytestmark = pytest.mark.server


def test_cli_run_when_the_server_dies_mid_run(server):
    with fake_server("proxy", upstream=server.url, die_after=6) as proxy:
        r = run_cli(["sglang-stop", "run", "--server", proxy.url, "--task", "chain_sum", "--problems", "2",
                     "--n", "4", "--prefix-len", "6", "--keep", "2", "--max-new-tokens", "16",
                     "--scorer", "confidence"], timeout=180)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 2, r.stderr[-2000:]
    errs = error_lines(r.stderr)
    assert len(errs) == 1, r.stderr[-2000:]
    assert re.search(re.escape(f"server {proxy.url}: POST /") + r"\S+: (the server closed the connection without "
                     r"replying|connection refused — the server stopped during the run)", errs[0]), errs[0]
    assert proxy.paths.count("/generate") >= 6  # it died at the 6th generation (others may have been in flight)
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
