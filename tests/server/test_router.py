"""sglang-router 0.3.2 in front of two real CPU SGLang workers (started once for this module): what the
router forwards, `label`, `run` and `calibrate` through it (both workers serve, each problem on one), and
a worker killed mid-label: its groups are redone on the other worker, no record lost or duplicated."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from conftest import Server, _free_port, _stop, server_python, start_server, wait_healthy

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def fleet(artifacts, tmp_path_factory) -> Iterator[tuple[Server, list[Server]]]:
    try:
        import_ok = subprocess.run([str(server_python()), "-c", "import sglang_router"], capture_output=True).returncode
    except FileNotFoundError:
        pytest.skip("server venv absent: run tests/server/install_server_venv.sh")
    if import_ok != 0:
        pytest.skip("sglang-router absent from the server venv: run tests/server/install_server_venv.sh")
    d = tmp_path_factory.mktemp("router")
    workers: list[Server] = []
    router = None
    try:
        for i in range(2):
            workers.append(start_server(artifacts, d / f"worker{i}.log"))
        port = _free_port()
        log = d / "router.log"
        cmd = [str(server_python()), "-m", "sglang_router.launch_router", "--host", "127.0.0.1", "--port", str(port),
               "--worker-urls", *[w.url for w in workers], "--policy", "manual",
               "--prometheus-port", str(_free_port()), "--log-level", "warn"]
        with open(log, "wb") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        router = Server(url=f"http://127.0.0.1:{port}", log=log, proc=proc)
        wait_healthy(router, "/workers")
        deadline = time.monotonic() + 120  # the router registers its workers asynchronously after start-up
        while len([w for w in requests.get(router.url + "/workers", timeout=10).json().get("workers", [])
                   if w.get("is_healthy")]) < len(workers):
            assert time.monotonic() < deadline, router.log_tail()
            time.sleep(1)
        yield router, workers
    finally:
        for s in [*workers, *([router] if router else [])]:
            _stop(s.proc)


def _served(w: Server) -> int:
    """Generation requests a worker logged (its prefill batches)."""
    return len(re.findall(r"Prefill batch", w.log.read_text(errors="replace")))


def test_routes_the_router_forwards(fleet):
    router, workers = fleet
    ok = {"input_ids": [[1, 2, 3]], "sampling_params": {"max_new_tokens": 0}}
    assert requests.post(router.url + "/generate", json=ok, timeout=60).status_code == 200
    assert requests.get(router.url + "/get_model_info", timeout=60).status_code == 200
    per_request = {"input_ids": [[1, 2, 3]], "sampling_params": [{"max_new_tokens": 0}]}
    assert requests.post(router.url + "/generate", json=per_request, timeout=60).status_code == 422
    for path, body in (("/tokenize", {"prompt": "a"}), ("/stop/score", {"input_ids": [[1, 2]]})):
        assert requests.post(router.url + path, json=body, timeout=60).status_code == 404, path
    assert requests.get(router.url + "/stop/adapters", timeout=60).status_code == 404
    got = requests.get(router.url + "/workers", timeout=60).json()
    assert sorted(w["url"] for w in got["workers"]) == sorted(w.url for w in workers)


def _cli(*args: str) -> dict:
    from sglang_stop.cli import cli

    res = CliRunner().invoke(cli, list(args))
    assert res.exit_code == 0, res.output
    return json.loads(res.output[res.output.index("{"):])


def test_label_run_calibrate_through_the_router(fleet, tmp_path):
    router, workers = fleet
    before = [_served(w) for w in workers]
    out = tmp_path / "labels.jsonl"
    got = _cli("label", "--router", router.url, "--problems", "4", "-P", "2", "-K", "3", "--prefix-len", "6",
               "--max-new-tokens", "12", "--out", str(out), "--json")
    print(json.dumps(got))
    assert got["written"] == got["records"] >= 6
    assert got["cache"]["fraction"] >= 0.9  # the routing key kept every problem's requests on one worker
    run = _cli("run", "--router", router.url, "--task", "chain_sum", "--problems", "4", "--n", "3",
               "--prefix-len", "6", "--keep", "2", "--max-new-tokens", "12", "--scorer", "stop", "--json")
    assert run["problems"] == 4 and run["backend_usage"]["reencoded_tokens"] == 0
    cal = tmp_path / "calib.jsonl"
    got = _cli("calibrate", "--router", router.url, "--task", "chain_sum", "--problems", "3", "--n-max", "3",
               "--prefix-lens", "4,8", "--max-new-tokens", "12", "--out", str(cal), "--json")
    assert got["added"] == 3
    assert all(_served(w) > b for w, b in zip(workers, before)), "both workers serve"


def test_worker_killed_mid_label_loses_and_repeats_nothing(fleet, artifacts, tmp_path):
    """`label --server A --server B` with B killed once records start arriving: B's groups are redone on A."""
    from sglang_stop.training.labels import load_labels

    _router, workers = fleet
    victim = workers[1]
    out = tmp_path / "labels.jsonl"
    args = ["label", *[a for w in workers for a in ("--server", w.url)], "--problems", "6", "-P", "2", "-K", "3",
            "--prefix-len", "6", "--max-new-tokens", "12", "--problems-per-batch", "1", "--out", str(out), "--json"]
    proc = subprocess.Popen([sys.executable, "-m", "sglang_stop.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_file() and len(out.read_text().splitlines()) >= 3:  # header + 2 records
                break
            time.sleep(0.2)
        _stop(victim.proc)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-2000:]
    got = json.loads(stdout[stdout.index("{"):])
    recs = load_labels(out)
    pairs = [(r.problem_id, r.prefix_idx) for r in recs]
    assert len(pairs) == len(set(pairs)) == got["records"] == got["written"]
    assert len({p for p, _ in pairs}) >= 5  # of 6 problems (one whose prefixes both hit EOS early has none)
    # nothing torn: every line parses (load_labels validated them), the header is the first line
    assert json.loads(out.read_text().splitlines()[0])["header"]["kind"] == "labels"
