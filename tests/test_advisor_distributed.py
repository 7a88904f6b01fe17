"""Distributed advisor search: 4 `stop-advise recommend` worker processes on one Optuna study, on
SQLite, on Optuna's journal file (`journal:///PATH`) and on a real PostgreSQL server started here.

Each storage gets one scenario that exercises every acceptance point at once: a dead worker's
RUNNING trial (a process killed while it held a claimed trial) is in the study before the workers
start, and one of the 4 workers is SIGKILLed mid-run. Then: the study holds exactly the requested
sampled trials, all COMPLETE, nothing RUNNING or WAITING, every trial finished before the kill is
still there, the dead trials are FAIL; each surviving worker's recommendation equals the selection
re-run in this process on the finished study and a fresh single-process `recommend` over it (which
adds no trial).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from sglang_stop.advisor.search import _is_polish, open_storage

ROOT = Path(__file__).resolve().parents[1]
CALIB = ROOT / "advisor" / "data" / "testbed-calib.jsonl.gz"
TRIALS, BUDGET, DRAWS = 12, 200, 4
WORKERS = 4
TS = optuna.trial.TrialState
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _recommend(storage: str, name: str, out: Path, polish: int) -> list[str]:
    return [sys.executable, "-m", "sglang_stop.advisor.cli", "recommend", "--calib", str(CALIB), "--budget", str(BUDGET),
            "--out", str(out), "--trials", str(TRIALS), "--draws", str(DRAWS), "--scorers", "stop",
            "--storage", storage, "--study-name", name, "--heartbeat", "1", "--polish-rounds", str(polish),
            "--json"]


def _study(storage: str, name: str) -> optuna.Study:
    store = open_storage(storage, heartbeat=1)
    assert store is not None
    return optuna.load_study(study_name=name, storage=store)


def _dead_trials(storage: str, name: str) -> list[int]:
    """What workers SIGKILLed inside a trial leave: RUNNING trials, one whose last heartbeat is old,
    one killed before its first beat (made here, in-process, to save process starts: the stored
    state is the same)."""
    study = optuna.create_study(study_name=name, storage=open_storage(storage, heartbeat=1),
                                directions=["maximize"], load_if_exists=True)
    beat, silent = study.ask(), study.ask()
    study._storage.record_heartbeat(beat._trial_id)  # type: ignore[attr-defined]
    return [beat._trial_id, silent._trial_id]


def _scenario(storage: str, tmp: Path, polish: int = 0) -> None:
    name = "dist"
    dead_ids = _dead_trials(storage, name)
    assert [t.state for t in _study(storage, name).trials] == [TS.RUNNING, TS.RUNNING]

    def start(i: int) -> subprocess.Popen[str]:
        return subprocess.Popen(_recommend(storage, name, tmp / f"rec{i}.yaml", polish), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)

    def completed_by(pids: set[int]) -> list[optuna.trial.FrozenTrial]:
        return [t for t in watch.get_trials(deepcopy=False, states=(TS.COMPLETE,))
                if int(t.user_attrs.get("worker", ":0").rsplit(":", 1)[1]) in pids]

    def wait_until(cond: object, what: str) -> None:
        deadline = time.monotonic() + 120
        while not cond() and time.monotonic() < deadline:  # type: ignore[operator]
            time.sleep(0.02)
        assert cond(), what  # type: ignore[operator]

    # The victim runs first and is SIGKILLed once it has finished a trial of its own (so it cannot have
    # finished the study, however fast the machine); the other three start as it dies and must recover
    # whatever it held. Freezing it instead (SIGSTOP) would leave SQLite's write lock held for good.
    watch = _study(storage, name)
    victim = start(0)
    procs = [victim]
    try:
        wait_until(lambda: completed_by({victim.pid}) or victim.poll() is not None, "the victim finished no trial")
        assert victim.poll() is None, "the victim worker ended before it could be killed"
        procs += [start(i) for i in range(1, WORKERS)]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        before = {t.number for t in watch.get_trials(deepcopy=False, states=(TS.COMPLETE,))}
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[0].returncode == -signal.SIGKILL
    for p, (out, err) in zip(procs[1:], outs[1:]):
        assert p.returncode == 0, err
        assert "Traceback" not in err

    study = _study(storage, name)
    trials = study.get_trials(deepcopy=False)
    states = {t.state for t in trials}
    assert states <= {TS.COMPLETE, TS.FAIL}, states  # nothing RUNNING or WAITING is left behind
    sampled = [t for t in trials if t.state == TS.COMPLETE and not _is_polish(t)]
    assert len(sampled) == TRIALS  # exactly the requested count, all workers together
    assert before <= {t.number for t in trials if t.state == TS.COMPLETE}  # the kill lost no finished trial
    assert [t.state for t in trials if t._trial_id in dead_ids] == [TS.FAIL, TS.FAIL]
    workers = {t.user_attrs["worker"] for t in trials if t.state == TS.COMPLETE}
    assert len(workers) >= 2  # the trials really come from several processes
    polished = [t for t in trials if t.state == TS.COMPLETE and _is_polish(t)]
    assert bool(polished) == bool(polish)
    if polish:  # the shared polish: workers took neighbours from one queue, rarely one twice
        assert len({str(t.params) for t in polished}) >= 0.8 * len(polished)
        assert len({t.user_attrs["worker"] for t in polished}) >= 2

    # The selection re-run here on the finished study = every surviving worker's recommendation.
    from sglang_stop.advisor.calibration import load_calibration
    from sglang_stop.advisor.replay import Replayer
    from sglang_stop.advisor.search import _results, default_space, run_study, select

    rep = Replayer(load_calibration([str(CALIB)]), draws=DRAWS, seed=0)
    best = select(_results(study, rep), BUDGET)
    assert best is not None
    for out, _ in outs[1:]:
        rec = json.loads(out)
        assert (rec["config"], rec["accuracy"], rec["tokens"]) == \
            (best.config.model_dump(mode="json"), best.accuracy, best.tokens)
    # A single-process search (what `recommend` runs) over the same study adds no trial and agrees.
    space = default_space(rep.calib, scorers=["stop"])
    again, results = run_study(rep, space, budget=BUDGET, n_trials=TRIALS, storage=storage, study_name=name,
                               polish_rounds=0, heartbeat=1)
    assert len(again.trials) == len(trials)
    assert select(results, BUDGET) == best


def _fast_dir() -> Path:
    """SQLite commits every write: on a tmpfs the 4 workers are several times faster than on disk."""
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None))


@pytest.fixture
def fast_tmp() -> Iterator[Path]:
    d = _fast_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_four_workers_sqlite(fast_tmp: Path, tmp_path: Path) -> None:
    _scenario(f"sqlite:///{fast_tmp / 'study.db'}", tmp_path)


def test_four_workers_journal(fast_tmp: Path, tmp_path: Path) -> None:
    _scenario(f"journal://{fast_tmp / 'study.log'}", tmp_path, polish=1)


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL server on a unix socket only (no TCP), as the `postgres` user when
    this runs as root (initdb refuses root)."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("the PostgreSQL driver is missing: pip install 'psycopg[binary]'")
    as_user: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="stop-pg-"))
    if os.geteuid() == 0:
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base, ignore_errors=True)
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, sock = base / "data", base
    with socket.socket() as s:  # a free port number: it names the socket file only
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def run(*cmd: str) -> None:
        r = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=60, cwd=base)
        if r.returncode != 0:
            shutil.rmtree(base, ignore_errors=True)
            pytest.skip(f"cannot start PostgreSQL ({Path(cmd[0]).name}: {(r.stderr or r.stdout).strip()[:200]})")

    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log"), "-o",
        f"-p {port} -k {sock} -c listen_addresses='' -c fsync=off", "start")
    try:
        run(str(bindir / "createdb"), "-h", str(sock), "-p", str(port), "-U", "postgres", "stop")
        yield f"postgresql+psycopg://postgres@/stop?host={sock}&port={port}"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60, cwd=base)
        shutil.rmtree(base, ignore_errors=True)


def test_four_workers_postgresql(postgres_url: str, tmp_path: Path) -> None:
    _scenario(postgres_url, tmp_path)


def test_heartbeat_without_storage_is_named_as_ignored(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sglang_stop.advisor.cli import main

    r = CliRunner().invoke(main, ["recommend", "--calib", str(CALIB), "--budget", str(BUDGET), "--out",
                                  str(tmp_path / "r.yaml"), "--trials", "2", "--draws", "2", "--scorers", "stop",
                                  "--polish-rounds", "0", "--heartbeat", "5", "--json"])
    assert r.exit_code == 0, r.output
    assert "warning: --heartbeat: used only with --storage" in r.stderr
    r = CliRunner().invoke(main, ["pareto", "--calib", str(CALIB), "--exhaustive", "--draws", "2", "--scorers", "stop",
                                  "--heartbeat", "5", "--json"])
    assert r.exit_code == 0, r.output
    assert "warning: --heartbeat: not used with --exhaustive" in r.stderr


def test_journal_pareto_resumes_to_the_requested_count(fast_tmp: Path) -> None:
    """NSGA-II on a journal file: a second worker run tops the study up to --trials, no more."""
    from sglang_stop.advisor.calibration import load_calibration
    from sglang_stop.advisor.replay import Replayer
    from sglang_stop.advisor.search import default_space, run_study

    cs = load_calibration([str(CALIB)])
    rep, space = Replayer(cs, draws=2, seed=0), default_space(cs, scorers=["stop"])
    url = f"journal://{fast_tmp / 'p.log'}"
    s1, _ = run_study(rep, space, budget=None, n_trials=4, multi_objective=True, storage=url, study_name="p")
    first = len(s1.trials)
    s2, res = run_study(rep, space, budget=None, n_trials=7, multi_objective=True, storage=url, study_name="p")
    assert [first, len(s2.trials)] == [4, 7]
    assert len(res) == 7 and len({t.params["n"] for t in s2.trials}) > 1  # per-trial seeds: not one repeated draw
