"""The bad-input battery: one table of (case, command, expected exit, expected message fragment).

Rows live in one module per area (``rows_*.py``) so they can grow independently; ``tests/test_battery.py``
runs them all as one parametrised table. A row's command runs as a subprocess (a hang is a failure
by timeout), and its stderr must carry the fragment on a single ``error:`` line with no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTBED = ROOT / "sglang_stop" / "assets" / "testbed"
TESTBED_STOP = ROOT / "sglang_stop" / "assets" / "testbed-stop"

ENTRY = {"sglang-stop": "sglang_stop.cli", "stop-advise": "sglang_stop.advisor.cli"}


@dataclass
class Case:
    """``argv[0]`` is ``sglang-stop`` or ``stop-advise``; ``{tmp}`` in any argument is the test's
    tmp dir, ``{testbed}`` / ``{testbed_stop}`` the committed testbed model / checkpoint, and
    ``{name}`` any key the ``setup`` callable returns (it gets the tmp dir and may write files)."""

    id: str
    argv: list[str]
    exit: int
    fragment: str
    setup: Callable[[Path], dict[str, str]] | None = None
    timeout: float = 180.0  # a hang still fails; a slow import on a busy machine does not
    env: dict[str, str] = field(default_factory=dict)
    # signal rows: send this signal once ``{tmp}/out.jsonl`` holds ``signal_after`` results; the
    # fragment is then expected on the last stderr line (a signal is not an error)
    signal: str | None = None
    signal_after: int = 1
    signal_times: int = 1  # a user pressing Ctrl-C again while the run stops


def expand(case: Case, tmp: Path) -> list[str]:
    subs = {"tmp": str(tmp), "testbed": str(TESTBED), "testbed_stop": str(TESTBED_STOP)}
    if case.setup is not None:
        subs.update(case.setup(tmp))
    return [a.format(**subs) for a in case.argv]


def popen_cli(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", ENTRY[argv[0]], *argv[1:]]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def result_lines(path: Path) -> int:
    """Records in a JSONL file, its header line not counted."""
    if not path.exists():
        return 0
    return sum(1 for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith('{"header"'))


def run_cli(argv: list[str], *, timeout: float = 60.0, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``sglang-stop ...`` / ``stop-advise ...`` as a user would (a fresh process)."""
    cmd = [sys.executable, "-m", ENTRY[argv[0]], *argv[1:]]
    # one torch thread: the tiny models gain nothing from two, and two spin-wait badly when the
    # machine's two cores are shared with other jobs
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT, env=full_env,
                          stdin=subprocess.DEVNULL)


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]
