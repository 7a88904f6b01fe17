"""`sglang-stop report`: statistics, labels, the per-problem view, the PNG and the one-line errors, on
small results files written here (no decoding)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from sglang_stop.config import RuntimeConfig
from sglang_stop.io import JsonlAppender, RecordHeader, open_records
from sglang_stop.program import PathRecord
from sglang_stop.report import build_report, load_runs, problem_views, run_labels
from sglang_stop.report_cli import main, report_cmd
from sglang_stop.runner import ProblemResult


@pytest.fixture(autouse=True)
def _keep_sigterm():
    """main() installs the CLIs' SIGTERM handler; leave the test process as it was."""
    old = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, old)


def _result(pid: str, correct: bool, *, pruned: int = 0, n: int = 4, prefix: int = 8) -> ProblemResult:
    """``n`` paths of 20 tokens, the first ``pruned`` cut at stage 0 after ``prefix`` tokens; the
    finished ones are right iff the problem is."""
    paths, ok = [], []
    for i in range(n):
        cut = i < pruned
        text = "4+4=8;8+1=9;A9" if correct else "4+4=9;9+1=10;A10"
        paths.append(PathRecord(index=i, text=text[:prefix] if cut else text + "x" * 100, answer=None if cut else
                                ("9" if correct else "10"), tokens=prefix if cut else 20, finished=not cut,
                                pruned_at=0 if cut else None, scores=[0.5 + 0.1 * i]))
        ok.append(not cut and correct)
    return ProblemResult(problem_id=pid, question="Q4+4+1=", gold="9", predicted="9" if correct else "10",
                         correct=correct, tokens=sum(p.tokens for p in paths), paths=paths, path_correct=ok)


def _write(path: Path, results: list[ProblemResult], *, scorer: str = "confidence", stages=((8, 2),),
           header: bool = True) -> Path:
    if header:
        cfg = RuntimeConfig(n=4, stages=[{"prefix_len": a, "keep": b} for a, b in stages],
                            sampling={"max_new_tokens": 64}).model_dump(mode="json")
        cfg["scorer"]["name"] = scorer  # as an older version recorded `none` with its (unused) stages
        hdr = RecordHeader(kind="run-results", settings={"config": cfg, "task": "testbed"},
                           model={"name": "testbed", "weights_hash": "abc"}, seed=0)
        app = open_records(path, hdr)
    else:
        app = JsonlAppender(path)
    with app:
        for r in results:
            app.append(r)
    return path


@pytest.fixture
def two_runs(tmp_path):
    """20 shared problems: run b is right on every problem a is, plus 3 more (paired diff > 0)."""
    a = [_result(f"p{i}", i % 2 == 0, pruned=2) for i in range(20)]
    b = [_result(f"p{i}", i % 2 == 0 or i in (1, 3, 5)) for i in range(20)]
    return _write(tmp_path / "a.jsonl", a), _write(tmp_path / "b.jsonl", b, scorer="none")


def test_stats_and_paired_interval(two_runs):
    rep = build_report(load_runs(two_runs), boot=2000, seed=0)
    a, b = rep.runs
    assert (a.accuracy, b.accuracy) == (0.5, 0.65)
    assert a.tokens_per_problem == 2 * 8 + 2 * 20 and b.tokens_per_problem == 80
    assert a.pruned_share == 0.5 and b.pruned_share == 0.0
    assert a.path_accuracy == 0.5 and b.path_accuracy == 0.65
    assert a.ci_low < 0.5 < a.ci_high and a.ci_high - a.ci_low > 0.3
    # paired: b is never worse on a problem, so no resample has b below a; unpaired intervals overlap
    (d,) = rep.paired
    assert d.diff == pytest.approx(0.15) and d.problems == 20
    assert d.ci_low >= 0.0 and d.ci_high <= 0.35
    assert b.ci_low < a.ci_high
    # reproducible; another seed gives other resamples
    again = build_report(load_runs(two_runs), boot=2000, seed=0)
    assert again.model_dump() == rep.model_dump()
    other = build_report(load_runs(two_runs), boot=2000, seed=1)
    assert (other.runs[0].ci_low, other.runs[0].ci_high, other.paired[0].ci_high) != (a.ci_low, a.ci_high, d.ci_high)


def test_labels(tmp_path, two_runs):
    (tmp_path / "x").mkdir()
    bare = _write(tmp_path / "x" / "a.jsonl", [_result("p0", True)], header=False)
    labels = run_labels(load_runs([*two_runs, bare]))
    a, b = (str(p) for p in two_runs)
    # names collide -> full paths; the none scorer never prunes, so its configured stage is not shown
    assert labels == [f"{a} (confidence n=4 stages=8:2)", f"b.jsonl (none n=4 stages=-)", str(bare)]


def test_partial_overlap_warns_and_pairs_on_shared(tmp_path):
    a = _write(tmp_path / "a.jsonl", [_result(f"p{i}", True) for i in range(10)])
    b = _write(tmp_path / "b.jsonl", [_result(f"p{i}", i < 6) for i in range(4, 14)])
    rep = build_report(load_runs([a, b]), boot=200)
    assert rep.paired[0].problems == 6 and rep.paired[0].diff == pytest.approx(-4 / 6)  # p6..p9 wrong in b
    assert len(rep.warnings) == 1 and "8 problems not in both" in rep.warnings[0]


def test_short_or_cut_files_warn(tmp_path, capsys):
    path = _write(tmp_path / "a.jsonl", [_result("p0", True), _result("p1", False)])
    header = json.loads(path.read_text().splitlines()[0])
    header["header"]["settings"]["problems"] = 5
    lines = [json.dumps(header), *path.read_text().splitlines()[1:]]
    path.write_text("\n".join(lines))  # no newline after the last record
    res = CliRunner().invoke(report_cmd, [str(path)], catch_exceptions=False)
    assert "1 problems" in res.output
    assert "warning: " + str(path) + ": the last line has no newline" in res.stderr
    assert "1 of the 5 problems asked are in the file" in res.stderr


def test_cli_text_table(two_runs):
    out = CliRunner().invoke(report_cmd, [str(p) for p in two_runs], catch_exceptions=False).output
    lines = out.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("run ") and "tokens/problem" in ln)
    rows = [lines[head]] + lines[head + 2: head + 4]  # heading, (rule), two runs
    col = rows[0].index("accuracy")
    assert [r[col: col + 8].strip() for r in rows] == ["accuracy", "0.500", "0.650"]  # aligned column
    assert rows[1].startswith("a.jsonl ") and rows[2].startswith("b.jsonl ")
    paired = next(ln for ln in lines if ln.startswith("b.jsonl") and "a.jsonl" in ln)
    assert "0.150" in paired and "seed 0" in out


def test_cli_problem_view(two_runs):
    out = CliRunner().invoke(report_cmd, [str(two_runs[0]), "--problem", "p1"], catch_exceptions=False).output
    assert "problem p1" in out and "gold 9  predicted 10  wrong" in out
    rows = [ln for ln in out.splitlines() if ln.split()[:1] in (["0"], ["1"], ["2"], ["3"])]
    assert len(rows) == 4
    assert "stage 0 @8" in rows[0] and "-" in rows[0] and "wrong" in rows[0]
    assert "0.8" in rows[3] and "10" in rows[3]
    assert rows[3].endswith("...") and len(rows[3].split("  ")[-1].strip()) == 80  # text cut to 80 chars


def test_cli_json_and_png(two_runs, tmp_path):
    png = tmp_path / "fig" / "acc.png"
    res = CliRunner().invoke(report_cmd, [*map(str, two_runs), "--json", "--png", str(png), "--problem", "p0"],
                             catch_exceptions=False)
    obj = json.loads(res.output)
    assert [r["accuracy"] for r in obj["runs"]] == [0.5, 0.65]
    assert obj["paired"][0]["diff"] == pytest.approx(0.15)
    assert [v["label"] for v in obj["problem"]] == [r["label"] for r in obj["runs"]]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


@pytest.mark.parametrize(
    "make,extra,fragment",
    [
        (lambda t: t / "missing.jsonl", [], "missing.jsonl: file not found"),
        (lambda t: t, [], "is a directory"),
        (lambda t: _labels_file(t), [], "holds labels records, not run-results"),
        (lambda t: _text(t / "c.jsonl", '{"problem": 1, "records": []}\n'), [], "c.jsonl:1: not a results file"),
        (lambda t: _text(t / "d.jsonl", '{"problem_id": "x"}\n'), [], "d.jsonl:1: question: Field required"),
        (lambda t: _text(t / "e.jsonl", "{oops\n"), [], "e.jsonl:1: invalid JSON"),
        (lambda t: _write(t / "f.jsonl", []), [], "f.jsonl: no problem results"),
        (lambda t: _write(t / "g.jsonl", [_result("p0", True), _result("p0", False)]), [], "'p0' appears twice"),
        (lambda t: _write(t / "h.jsonl", [_result("p0", True)]), ["--problem", "p9"], "--problem: no problem 'p9'"),
        (lambda t: _write(t / "i.jsonl", [_result("p0", True)]), ["--png", "x.pdf"], "--png: x.pdf: the file name"),
        (lambda t: _write(t / "j.jsonl", [_result("p0", True)]), ["--boot", "10"], "--boot: must be between 100"),
        (lambda t: _write(t / "k.jsonl", [_result("p0", True)]), ["--boot", "10000000"], "and 100000, got"),
        (lambda t: _write(t / "l.jsonl", [_result("p0", True)]), ["--png", "{tmp}/l.jsonl/x.png"], "is a file, not a dir"),
        (lambda t: _write(t / "m.jsonl", [_result("p0", True).model_copy(update={"path_correct": [True]})]), [],
         "'p0': 1 path_correct entries for 4 paths"),
    ],
    ids=["missing", "directory", "other-kind", "not-results", "bad-record", "bad-json", "empty", "duplicate",
         "unknown-problem", "png-suffix", "boot-low", "boot-high", "png-under-file", "path-correct-length"],
)
def test_errors_one_line(tmp_path, capsys, make, extra, fragment):
    path = make(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main([str(path), *(a.format(tmp=tmp_path) for a in extra)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err


def test_no_files_is_an_error(capsys):
    with pytest.raises(SystemExit):
        main([])
    assert "RESULTS: give at least one results file" in capsys.readouterr().err


def test_missing_problem_in_one_run_warns(tmp_path, capsys):
    a = _write(tmp_path / "a.jsonl", [_result("p0", True), _result("p1", True)])
    b = _write(tmp_path / "b.jsonl", [_result("p0", True)])
    views, warnings = problem_views(load_runs([a, b]), "p1")
    assert [v.label.split()[0] for v in views] == ["a.jsonl"]
    assert warnings == ["b.jsonl (confidence n=4 stages=8:2): has no problem 'p1'; left out"]


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _labels_file(tmp: Path) -> Path:
    with open_records(tmp / "labels.jsonl", RecordHeader(kind="labels")) as app:
        app.append({"x": 1})
    return tmp / "labels.jsonl"
