"""Battery rows: report (bad results files and options; nothing decodes)."""

from __future__ import annotations

from pathlib import Path

from tests.battery import Case

_RESULT = (
    '{"problem_id":"p0","question":"Q1+1=","gold":"2","predicted":"2","correct":true,"tokens":5,'
    '"paths":[{"index":0,"text":"1+1=2;A2","answer":"2","tokens":5,"finished":true}],"path_correct":[true]}\n'
)


def _files(tmp: Path) -> dict[str, str]:
    (tmp / "ok.jsonl").write_text(_RESULT)
    (tmp / "labels.jsonl").write_text('{"header":{"kind":"labels"}}\n{"x":1}\n')
    (tmp / "other.jsonl").write_text('{"records":[]}\n')
    return {"ok": str(tmp / "ok.jsonl"), "labels": str(tmp / "labels.jsonl"), "other": str(tmp / "other.jsonl")}


ROWS: list[Case] = [
    Case("report-missing-file", ["sglang-stop", "report", "{tmp}/nope.jsonl"], 2, "nope.jsonl: file not found"),
    Case("report-other-records", ["sglang-stop", "report", "{labels}"], 2, "holds labels records, not run-results",
         setup=_files),
    Case("report-not-results", ["sglang-stop", "report", "{other}"], 2, "other.jsonl:1: not a results file",
         setup=_files),
    Case("report-unknown-problem", ["sglang-stop", "report", "{ok}", "--problem", "p7"], 2,
         "--problem: no problem 'p7'", setup=_files),
    Case("report-png-suffix", ["sglang-stop", "report", "{ok}", "--png", "{tmp}/fig.jpg"], 2,
         "the file name must end in .png", setup=_files),
]
