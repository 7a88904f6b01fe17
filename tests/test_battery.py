"""Every bad input, signal and fault we know of, as one table: each ends in one line and a non-zero exit."""

from __future__ import annotations

import pytest

import signal
import time

from tests.battery import Case, error_lines, expand, popen_cli, result_lines, run_cli
from tests.battery import rows_advisor, rows_advisor_distributed, rows_config, rows_report, rows_run, rows_serve, rows_server, rows_training

ROWS: list[Case] = [
    *rows_config.ROWS,
    *rows_run.ROWS,
    *rows_training.ROWS,
    *rows_advisor.ROWS,
    *rows_advisor_distributed.ROWS,
    *rows_server.ROWS,
    *rows_report.ROWS,
    *rows_serve.ROWS,
]


def test_row_ids_unique():
    ids = [c.id for c in ROWS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", ROWS, ids=[c.id for c in ROWS])
def test_battery(case: Case, tmp_path):
    argv = expand(case, tmp_path)
    if case.signal is not None:
        return _signal_row(case, argv, tmp_path)
    r = run_cli(argv, timeout=case.timeout, env=case.env)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == case.exit, (r.returncode, r.stderr[-2000:])
    if case.exit == 0:
        assert case.fragment in r.stdout + r.stderr, (r.stdout[-2000:], r.stderr[-2000:])
        return
    errs = error_lines(r.stderr)
    assert len(errs) == 1, r.stderr[-2000:]
    assert case.fragment in errs[0], errs[0]


def _signal_row(case: Case, argv: list[str], tmp) -> None:
    out = tmp / "out.jsonl"
    p = popen_cli(argv, env=case.env)
    deadline = time.monotonic() + case.timeout
    while result_lines(out) < case.signal_after and p.poll() is None:
        assert time.monotonic() < deadline, "no results appeared"
        time.sleep(0.05)
    assert p.poll() is None, "the run finished before the signal"
    sig = getattr(signal, case.signal)
    t0 = time.monotonic()
    for i in range(case.signal_times):
        if i:
            time.sleep(0.05)
        if p.poll() is None:
            p.send_signal(sig)
    _, stderr = p.communicate(timeout=30)
    # prompt: within seconds (the run left alone goes on for minutes); a loaded CI machine takes a few
    # seconds to schedule the stopping threads, so the bound is not tighter
    assert time.monotonic() - t0 < 10.0
    assert "Traceback" not in stderr, stderr[-2000:]
    assert p.returncode == case.exit, (p.returncode, stderr[-1000:])
    last = stderr.strip().splitlines()[-1]
    assert case.fragment in last, last
    assert f"after {result_lines(out)} of" in last, (last, result_lines(out))
