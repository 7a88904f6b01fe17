"""Fixtures that start the REAL SGLang server (``python -m sglang.launch_server``) on 127.0.0.1.

The server runs from its own venv (tests/server/install_server_venv.sh; path in SGLANG_STOP_SERVER_VENV,
default ``.venv-server``) with the stand-ins of tests/server/standins on PYTHONPATH, a tiny random Qwen2
made here, and the STOP adapter converted from a checkpoint in the authors' layout. One server per session
(start-up is ~1-2 min on 2 cores); it is killed, with its whole process group, at teardown.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import tiny  # noqa: E402

START_TIMEOUT_S = float(os.environ.get("SGLANG_STOP_SERVER_START_TIMEOUT", "400"))


def server_python() -> Path:
    venv = Path(os.environ.get("SGLANG_STOP_SERVER_VENV", ROOT / ".venv-server"))
    return venv / "bin" / "python"


@dataclass
class Artifacts:
    model: Path
    checkpoint: Path
    adapter: Path


@dataclass
class Server:
    url: str
    log: Path
    proc: subprocess.Popen

    def log_tail(self, n: int = 60) -> str:
        lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if "server_args=" not in ln]
        return "\n".join(lines[-n:])


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    from sglang_stop.srt.convert import convert_checkpoint

    d = tmp_path_factory.mktemp("stop-server")
    model = tiny.make_model(d / "model")
    ckpt = tiny.make_stop_checkpoint(model, d / "checkpoint")
    convert_checkpoint(ckpt, model, d / "adapter")
    return Artifacts(model=model, checkpoint=ckpt, adapter=d / "adapter")


@pytest.fixture(scope="session")
def reference(artifacts: Artifacts) -> tiny.ReferenceScorer:
    return tiny.ReferenceScorer(artifacts.model, artifacts.checkpoint)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


def start_server(artifacts: Artifacts, log: Path, *extra: str) -> Server:
    """Launch one real server on a free port and wait until it serves /stop/adapters (fails the test on
    an early exit or a timeout, with the log's tail); the caller stops it with ``_stop(srv.proc)``."""
    py = server_python()
    if not py.exists():
        pytest.skip(f"server venv absent ({py}): run tests/server/install_server_venv.sh")
    port = _free_port()
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(HERE / "standins"),
        SGLANG_USE_CPU_ENGINE="1",
        PYTHONUNBUFFERED="1",
    )
    env.pop("SGLANG_STOP_INTERNAL_KEY", None)
    cmd = [
        str(py), "-m", "sglang.launch_server",
        "--model-path", str(artifacts.model),
        "--host", "127.0.0.1", "--port", str(port),
        "--device", "cpu", "--attention-backend", "torch_native", "--disable-overlap-schedule",
        "--dtype", "float32", "--max-total-tokens", "16384", "--page-size", "1",
        "--enable-lora", "--lora-paths", f"stop={artifacts.adapter}", "--max-lora-rank", "8",
        "--lora-backend", "torch_native", "--return-hidden-states-mode", "last",
        "--random-seed", "0", *extra,
    ]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
    srv = Server(url=f"http://127.0.0.1:{port}", log=log, proc=proc)
    try:
        wait_healthy(srv, "/stop/adapters")
    except BaseException:
        _stop(proc)
        raise
    return srv


def wait_healthy(srv: Server, path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if srv.proc.poll() is not None:
            pytest.fail(f"{srv.url} exited with {srv.proc.returncode} during start-up:\n{srv.log_tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{srv.url} not healthy after {START_TIMEOUT_S:.0f}s:\n{srv.log_tail()}")
        try:
            if requests.get(srv.url + "/health", timeout=5).status_code == 200 and requests.get(
                srv.url + path, timeout=5
            ).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(2)


@pytest.fixture(scope="session")
def server(artifacts: Artifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(artifacts, tmp_path_factory.mktemp("server-log") / "server.log")
    try:
        yield srv
    finally:
        _stop(srv.proc)
