"""The seam for ``sglang-stop calibrate``: resumable appends of CalibRecord lines.

The runtime runs each problem with N_max paths and no pruning, calls every scorer at every prefix
length on the paths still running there, and hands the result here as a CalibRecord. Appends are
one whole line + fsync (sglang_stop.io.JsonlAppender), so a killed run resumes by skipping the
problems already in the file. With a header (``sglang-stop calibrate`` always gives one) the file
is opened through ``sglang_stop.io.open_records``: a new file starts with the header, an existing
one is extended only if its header has the same settings (else a UserError names the setting).
"""

from __future__ import annotations

import json
from pathlib import Path

from sglang_stop.advisor.calibration import CalibRecord
from sglang_stop.io import Closing, JsonlAppender, RecordHeader, open_records


def done_problem_ids(path: str | Path) -> set[str]:
    """Problem ids already recorded (complete lines only; a torn tail line is ignored)."""
    p = Path(path)
    if not p.is_file():
        return set()
    lines = p.read_bytes().split(b"\n")
    out = set()
    for raw in lines[:-1]:  # the last chunk is either empty or a torn append
        if raw.strip():
            try:
                out.add(str(json.loads(raw)["problem_id"]))
            except (ValueError, KeyError, TypeError):
                continue  # load_calibration reports it with file:line
    return out


class CalibrationWriter(Closing):
    """``with CalibrationWriter(path, header) as w: if pid not in w.done: w.append(record)``"""

    def __init__(self, path: str | Path, header: RecordHeader | None = None) -> None:
        # open first: it checks the header and drops a torn tail line before the done ids are read
        self._app = JsonlAppender(path) if header is None else open_records(path, header, resume=True)
        self.done = done_problem_ids(path)

    def append(self, rec: CalibRecord) -> None:
        CalibRecord.model_validate(rec.model_dump())  # never write a line the loader would reject
        self._app.append(rec)
        self.done.add(rec.problem_id)

    def close(self) -> None:
        self._app.close()
