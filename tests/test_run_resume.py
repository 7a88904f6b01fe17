"""`run --out` keeps every finished problem: SIGKILL or SIGINT at a random point, then `--resume`,
gives the same file as an uninterrupted run (same problems, same answers and tokens)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.battery import ROOT, TESTBED, error_lines, run_cli

ARGS = ["run", "--model", str(TESTBED), "--task", "testbed", "--problems", "12", "--n", "8", "--prefix-len", "8",
        "--keep", "2", "--scorer", "confidence", "--max-new-tokens", "64", "--concurrency", "1", "--json"]


def results(path: Path) -> dict[str, tuple]:
    out = {}
    for line in path.read_text().splitlines():
        obj = json.loads(line)
        if "header" in obj:
            continue
        assert obj["problem_id"] not in out, "a problem was written twice"
        out[obj["problem_id"]] = (obj["predicted"], obj["tokens"], [p["answer"] for p in obj["paths"]])
    return out


def result_lines(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(1 for ln in path.read_text().splitlines() if ln.strip() and '"header"' not in ln[:12])


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, tuple]:
    out = tmp_path_factory.mktemp("ref") / "ref.jsonl"
    r = run_cli(["sglang-stop", *ARGS, "--out", str(out)], timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ref = results(out)
    assert len(ref) == 12
    return ref


def start(out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "sglang_stop.cli", *ARGS, "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})


def wait_for_results(p: subprocess.Popen[str], out: Path, at_least: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while result_lines(out) < at_least and p.poll() is None:
        assert time.monotonic() < deadline, "no results appeared"
        time.sleep(0.05)


def resume_and_compare(out: Path, reference: dict[str, tuple]) -> None:
    r = run_cli(["sglang-stop", *ARGS, "--out", str(out), "--resume"], timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["problems"] == 12
    assert results(out) == reference


def test_existing_out_needs_resume(tmp_path, reference):
    out = tmp_path / "r.jsonl"
    out.write_text('{"header": {"kind": "run-results"}}\n{"x": 1}\n')
    r = run_cli(["sglang-stop", *ARGS, "--out", str(out)])
    assert r.returncode == 2 and "pass --resume" in error_lines(r.stderr)[0]


def test_resume_with_other_settings_is_refused(tmp_path, reference):
    out = tmp_path / "r.jsonl"
    p = start(out)
    wait_for_results(p, out, 1)
    p.kill()
    p.wait()
    args = [a if a != "confidence" else "entropy" for a in ARGS]
    r = run_cli(["sglang-stop", *args, "--out", str(out), "--resume"])
    assert r.returncode == 2, r.stderr[-1000:]
    (line,) = error_lines(r.stderr)
    assert "recorded with config=" in line or "scorer" in line


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, reference):
    out = tmp_path / "r.jsonl"
    p = start(out)
    wait_for_results(p, out, random.Random(0).randint(1, 6))
    p.kill()
    p.wait()
    assert 1 <= result_lines(out) < 12
    resume_and_compare(out, reference)


@pytest.mark.parametrize("trial", range(10))
def test_sigint_at_a_random_point_keeps_results_and_resumes(tmp_path, reference, trial):
    out = tmp_path / "r.jsonl"
    rng = random.Random(trial)
    p = start(out)
    wait_for_results(p, out, rng.randint(1, 8))  # once the run is under way (not mid-import)
    time.sleep(rng.uniform(0.0, 0.3))
    sig = signal.SIGINT if trial % 3 else signal.SIGTERM
    t0 = time.monotonic()
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=30)
    elapsed = time.monotonic() - t0
    assert "Traceback" not in stderr, stderr[-2000:]
    kept = result_lines(out)
    if p.returncode == 0:  # the run finished before the signal landed
        assert kept == 12
    else:
        assert p.returncode == (130 if sig == signal.SIGINT else 143), stderr[-1000:]
        assert elapsed < 2.0, elapsed
        last = stderr.strip().splitlines()[-1]
        assert last.startswith(f"interrupted by {sig.name}"), last
        assert f"after {kept} of 12 problems" in last, (last, kept)
    resume_and_compare(out, reference)
