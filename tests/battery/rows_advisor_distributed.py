"""Battery rows: the shared-study options of `stop-advise recommend` / `pareto` (--storage kinds,
--heartbeat, --polish-rounds), each refused in one line before any search starts."""

from __future__ import annotations

from pathlib import Path

from tests.battery import Case
from tests.battery.rows_advisor import _synth


def _bad_journal(tmp: Path) -> dict[str, str]:
    (tmp / "j.log").write_text("not a journal\n")
    return _synth(tmp)


REC = ["stop-advise", "recommend", "--calib", "{calib}", "--out", "{tmp}/rec.yaml", "--budget", "600", "--trials", "2",
       "--polish-rounds", "0"]
PARETO = ["stop-advise", "pareto", "--calib", "{calib}", "--trials", "2"]

ROWS: list[Case] = [
    Case("advise-storage-journal-relative", [*REC, "--storage", "journal://j.log"], 2,
         "--storage journal://j.log: a journal file is journal:///ABSOLUTE/PATH", _synth),
    Case("advise-storage-journal-no-dir", [*REC, "--storage", "journal:///nodir/j.log"], 2,
         "--storage journal:///nodir/j.log: directory /nodir does not exist", _synth),
    Case("advise-storage-journal-is-dir", [*REC, "--storage", "journal://{tmp}"], 2,
         "expected a journal file path, got a directory", _synth),
    Case("advise-storage-journal-garbage", [*REC, "--storage", "journal://{tmp}/j.log"], 2,
         "cannot open the study", _bad_journal),
    Case("advise-storage-postgres-no-server",
         [*REC, "--storage", "postgresql+psycopg://u@/db?host={tmp}/nosock&port=1"], 2, "cannot open the study", _synth),
    Case("advise-heartbeat-0", [*REC, "--storage", "{tmp}/s.db", "--heartbeat", "0"], 2,
         "--heartbeat: must be >= 1, got 0", _synth),
    Case("advise-pareto-heartbeat-0", [*PARETO, "--storage", "{tmp}/s.db", "--heartbeat", "0"], 2,
         "--heartbeat: must be >= 1, got 0", _synth),
    Case("advise-polish-rounds-negative", [*REC, "--polish-rounds", "-1"], 2, "--polish-rounds: must be >= 0, got -1",
         _synth),
]
