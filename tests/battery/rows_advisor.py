"""Battery rows: advisor (`stop-advise`) and calibration (`sglang-stop calibrate`)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.battery import TESTBED, Case, run_cli


def _synth(tmp: Path) -> dict[str, str]:
    """A small synthetic calibration set (6 problems x 16 paths, prune points 32, 64, 96, 128)."""
    from sglang_stop.advisor.synthetic import write_synthetic

    f = tmp / "calib.jsonl"
    write_synthetic(f, 6, preset="testbed", seed=1)
    return {"calib": str(f)}


def _not_a_db(tmp: Path) -> dict[str, str]:
    (tmp / "x.db").write_text("not a sqlite file\n")
    return _synth(tmp)


def _check_files(tmp: Path) -> dict[str, str]:
    """rec.yaml recommends n=16 entropy; run.jsonl was made with n=4 confidence (its header says so)."""
    from sglang_stop.config import RuntimeConfig, dump_config
    from sglang_stop.io import RecordHeader

    meta = {"predicted_tokens_per_problem": 100.0, "predicted_accuracy": 0.5, "ci_low": 0.4, "ci_high": 0.6}
    rec = RuntimeConfig(n=16, stages=[{"prefix_len": 8, "keep": 4}], scorer={"name": "entropy"}, metadata=meta)
    run = RuntimeConfig(n=4, stages=[{"prefix_len": 8, "keep": 2}], scorer={"name": "confidence"}, metadata=meta)
    dump_config(rec, tmp / "rec.yaml")
    line = json.dumps({"problem_id": "p0", "question": "q", "gold": "1", "predicted": "1", "correct": True,
                       "tokens": 564, "paths": [], "path_correct": []})
    head = RecordHeader(kind="run-results", settings={"config": run.model_dump(mode="json"), "task": "testbed"})
    (tmp / "run.jsonl").write_text(json.dumps({"header": head.model_dump(mode="json")}) + "\n" + line + "\n")
    (tmp / "nohead.jsonl").write_text(line + "\n")
    calib = RecordHeader(kind="calibration", settings={})
    (tmp / "calib-as-results.jsonl").write_text(json.dumps({"header": calib.model_dump(mode="json")}) + "\n")
    return {"rec": str(tmp / "rec.yaml"), "run": str(tmp / "run.jsonl"), "nohead": str(tmp / "nohead.jsonl"),
            "calibfile": str(tmp / "calib-as-results.jsonl")}


def _results_as_calib(tmp: Path) -> dict[str, str]:
    from sglang_stop.io import RecordHeader

    head = RecordHeader(kind="run-results", settings={})
    (tmp / "run.jsonl").write_text(json.dumps({"header": head.model_dump(mode="json")}) + "\n")
    return {"run": str(tmp / "run.jsonl")}


CALIBRATE = ["sglang-stop", "calibrate", "--model", "{testbed}", "--task", "testbed", "--problems", "1",
             "--scorers", "confidence", "--threads", "1", "--concurrency", "1"]


def _calibrated(tmp: Path) -> dict[str, str]:
    """A real calibration file of 1 problem x 2 paths on the testbed (its header says n_max=2)."""
    out = tmp / "calib.jsonl"
    r = run_cli([a.format(testbed=TESTBED) for a in CALIBRATE]
                + ["--n-max", "2", "--prefix-lens", "4", "--max-new-tokens", "40", "--out", str(out), "--json"],
                timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return {"out": str(out)}


C = "{calib}"
REC = ["stop-advise", "recommend", "--calib", C, "--out", "{tmp}/rec.yaml"]
REPLAY = ["stop-advise", "replay", "--calib", C, "--scorer", "stop"]

ROWS: list[Case] = [
    # recommend: every option checked before any search
    Case("advise-recommend-budget-nan", [*REC, "--budget", "nan"], 2, "--budget: must be a positive, finite", _synth),
    Case("advise-recommend-budget-inf", [*REC, "--budget", "inf"], 2, "--budget: must be a positive, finite", _synth),
    Case("advise-recommend-budget-negative", [*REC, "--budget", "-5"], 2, "--budget: must be a positive", _synth),
    Case("advise-recommend-budget-not-a-number", [*REC, "--budget", "lots"], 2, "'--budget'", _synth),
    Case("advise-recommend-trials-0", [*REC, "--budget", "600", "--trials", "0"], 2, "--trials: must be >= 1", _synth),
    Case("advise-recommend-draws-0", [*REC, "--budget", "600", "--draws", "0"], 2, "--draws: must be >= 1", _synth),
    Case("advise-recommend-max-stages-0", [*REC, "--budget", "600", "--max-stages", "0"], 2,
         "--max-stages: must be 1, 2 or 3", _synth),
    Case("advise-recommend-storage-no-dir", [*REC, "--budget", "600", "--storage", "/nodir/x.db"], 2,
         "--storage /nodir/x.db: directory /nodir does not exist", _synth),
    Case("advise-recommend-storage-is-dir", [*REC, "--budget", "600", "--storage", "{tmp}"], 2,
         "expected a sqlite file path", _synth),
    Case("advise-recommend-storage-not-sqlite", [*REC, "--budget", "600", "--storage", "{tmp}/x.db", "--trials", "5"],
         2, "--storage", _not_a_db),
    Case("advise-recommend-tolerance-nan", [*REC, "--budget", "600", "--tolerance", "nan"], 2, "--tolerance", _synth),
    Case("advise-recommend-robust-with-tokens", [*REC, "--budget", "600", "--objective", "tokens", "--selection",
                                                 "robust"], 2, "--selection robust: applies to --objective accuracy",
         _synth),
    Case("advise-recommend-budget-below-cheapest", [*REC, "--budget", "10"], 2, "minimum is", _synth),
    Case("advise-recommend-unknown-scorer", [*REC, "--budget", "600", "--scorers", "oracle"], 2,
         "--scorers: oracle not recorded", _synth),
    # replay: stages that cannot be run are refused, naming the stage
    Case("advise-replay-keep-above-n", [*REPLAY, "--n", "8", "--stage", "32:9"], 2,
         "--stage 32:9: keeps 9 paths, but only 8 are alive with --n 8", _synth),
    Case("advise-replay-second-keep-above-alive", [*REPLAY, "--n", "8", "--stage", "32:2", "--stage", "64:4"], 2,
         "--stage 64:4: keeps 4 paths, but only 2 are alive after --stage 32:2", _synth),
    Case("advise-replay-stages-not-ascending", [*REPLAY, "--n", "8", "--stage", "64:4", "--stage", "32:2"], 2,
         "--stage 32:2: prefix length must exceed the previous stage's", _synth),
    Case("advise-replay-stage-with-scorer-none", ["stop-advise", "replay", "--calib", C, "--n", "8", "--stage",
                                                  "32:2"], 2, "scorer 'none' ranks nothing", _synth),
    Case("advise-replay-stage-unrecorded", [*REPLAY, "--n", "8", "--stage", "40:2"], 2, "40 not recorded", _synth),
    Case("advise-replay-stage-malformed", [*REPLAY, "--n", "8", "--stage", "32"], 2, "expected PREFIX_LEN:KEEP",
         _synth),
    Case("advise-replay-n-above-recorded", [*REPLAY, "--n", "32", "--stage", "32:2"], 2,
         "n=32 exceeds the 16 paths", _synth),
    Case("advise-replay-n-0", [*REPLAY, "--n", "0"], 2, "--n: must be >= 1", _synth),
    Case("advise-replay-draws-0", [*REPLAY, "--n", "4", "--draws", "0"], 2, "--draws: must be >= 1", _synth),
    # other commands
    Case("advise-pareto-trials-0", ["stop-advise", "pareto", "--calib", C, "--trials", "0"], 2,
         "--trials: must be >= 1", _synth),
    Case("advise-pareto-storage-no-dir", ["stop-advise", "pareto", "--calib", C, "--storage", "/nodir/p.db"], 2,
         "directory /nodir does not exist", _synth),
    Case("advise-plot-draws-0", ["stop-advise", "plot", "--calib", C, "--out", "{tmp}/p.png", "--draws", "0"], 2,
         "--draws: must be >= 1", _synth),
    Case("advise-plot-budget-inf", ["stop-advise", "plot", "--calib", C, "--out", "{tmp}/p.png", "--budget", "inf"],
         2, "--budget: must be a positive, finite", _synth),
    Case("advise-regret-holdout-1", ["stop-advise", "regret", "--calib", C, "--budget", "600", "--holdout", "1"], 2,
         "--holdout: must be a fraction strictly between 0 and 1", _synth),
    Case("advise-regret-draws-0", ["stop-advise", "regret", "--calib", C, "--budget", "600", "--draws", "0"], 2,
         "--draws: must be >= 1", _synth),
    Case("advise-regret-splits-0", ["stop-advise", "regret", "--calib", C, "--budget", "600", "--splits", "0"], 2,
         "--splits: must be >= 1", _synth),
    Case("advise-guideline-budget-inf", ["stop-advise", "guideline", "--budget", "inf", "--prefix-len", "64",
                                         "--task-len", "100"], 2, "--budget: must be a positive, finite"),
    Case("advise-guideline-task-len-nan", ["stop-advise", "guideline", "--budget", "1000", "--prefix-len", "64",
                                           "--task-len", "nan"], 2, "--task-len: must be a positive, finite"),
    Case("advise-synth-problems-0", ["stop-advise", "synth", "--out", "{tmp}/s.jsonl", "--problems", "0"], 2,
         "--problems: must be >= 1"),
    Case("advise-calib-is-run-results", ["stop-advise", "replay", "--calib", "{run}", "--n", "2"], 2,
         "holds run-results records, not calibration", _results_as_calib),
    Case("advise-calib-missing", ["stop-advise", "replay", "--calib", "{tmp}/none.jsonl", "--n", "2"], 2,
         "file not found"),
    # check: results of another config, or unverifiable ones
    Case("advise-check-results-of-other-config", ["stop-advise", "check", "--config", "{rec}", "--results", "{run}"],
         2, "results were made with n=4, the config has n=16", _check_files),
    Case("advise-check-results-without-header", ["stop-advise", "check", "--config", "{rec}", "--results",
                                                 "{nohead}"], 2, "has no header record", _check_files),
    Case("advise-check-results-are-calibration", ["stop-advise", "check", "--config", "{rec}", "--results",
                                                  "{calibfile}"], 2, "holds calibration records, not run results",
         _check_files),
    Case("advise-check-results-missing", ["stop-advise", "check", "--config", "{rec}", "--results",
                                          "{tmp}/none.jsonl"], 2, "none.jsonl: file not found", _check_files),
    # calibrate (sglang_stop.calibrate.collect): refused before any decoding
    Case("calibrate-n-max-0", [*CALIBRATE, "--n-max", "0", "--out", "{tmp}/c.jsonl"], 2, "--n-max"),
    Case("calibrate-prefix-at-max-new-tokens", [*CALIBRATE, "--n-max", "2", "--prefix-lens", "8,40",
                                                "--max-new-tokens", "40", "--out", "{tmp}/c.jsonl"], 2,
         "--prefix-lens: 40 is not below sampling.max_new_tokens (40)"),
    Case("calibrate-resume-other-n-max", [*CALIBRATE, "--n-max", "4", "--prefix-lens", "4", "--max-new-tokens", "40",
                                          "--out", "{out}"], 2, "recorded with n_max=2, this run has n_max=4",
         _calibrated, timeout=120),
]
