"""Calibration records: every sampled path of a problem, scored by every scorer at every prune point.

One JSON line per problem (schema_version'd), written by ``sglang-stop calibrate`` and read by the
offline replay. Recording *all* paths unpruned, with all scorers at all candidate prefix lengths,
is what lets the advisor evaluate any (N, stages, scorer, vote) later without the model.

Rules the runtime must follow when recording (the replay relies on them):
  * ``length`` is the path's full generated token count (prompt excluded, prefix included).
  * Every path has a score for every scorer in ``scorers`` at every length in ``prefix_lens`` that
    is below its ``length`` (the runtime never scores a finished path, so those may be omitted;
    extra ones are ignored). Higher = keep.
  * ``answer`` is the extracted answer (null if none); ``correct`` compares it with the reference.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sglang_stop.config import ModelSpec, SamplingConfig
from sglang_stop.errors import UserError
from sglang_stop.io import RecordHeader, read_data, read_header, read_jsonl

CALIB_SCHEMA_VERSION: Literal[1] = 1

#: Scorers the replay can evaluate without recorded scores.
VIRTUAL_SCORERS = ("none", "random")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="null")


class CalibPath(_Strict):
    """One sampled path, generated to completion (never pruned while recording)."""

    answer: str | None = Field(None, description="extracted answer; null if none was found")
    correct: bool = Field(..., description="answer matches the reference")
    length: int = Field(..., ge=0, description="full generated tokens (prompt excluded)")
    scores: dict[str, dict[int, float]] = Field(
        default_factory=dict, description="scorer name -> {prefix_len: score}; higher = keep"
    )

    @field_validator("scores")
    @classmethod
    def _finite(cls, v: dict[str, dict[int, float]]) -> dict[str, dict[int, float]]:
        for name, per_len in v.items():
            for plen, s in per_len.items():
                if not math.isfinite(s):
                    raise ValueError(f"{name}.{plen}: score must be finite, got {s}")
        return v


class CalibRecord(_Strict):
    """All recorded paths of one problem."""

    schema_version: Literal[1] = CALIB_SCHEMA_VERSION
    problem_id: str = Field(..., min_length=1)
    task: str = Field(..., description="task name as `sglang-stop run --task` takes it")
    model_id: str = Field(..., description="human-readable model identity, e.g. HF repo id or 'embedded'")
    model: ModelSpec = Field(default_factory=ModelSpec, description="the runtime's model spec used")
    n_max: int = Field(..., ge=1, description="paths sampled for this problem")
    prefix_lens: list[int] = Field(..., min_length=1, description="recorded prune points, ascending")
    scorers: list[str] = Field(..., description="scorers recorded for every path at every prefix_len")
    scorer_options: dict[str, dict] = Field(default_factory=dict, description="options each scorer ran with")
    sampling: SamplingConfig
    prompt: str | None = Field(None, description="prompt template used; null = the runtime's default")
    chat_template: bool | None = None
    seed: int | None = None
    reference: str | None = Field(None, description="gold answer, for reference only")
    paths: list[CalibPath] = Field(..., min_length=1)

    @field_validator("prefix_lens")
    @classmethod
    def _ascending(cls, v: list[int]) -> list[int]:
        if any(x < 1 for x in v):
            raise ValueError("prefix lengths must be >= 1")
        if any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"must be strictly ascending, got {v}")
        return v

    @model_validator(mode="after")
    def _complete(self) -> CalibRecord:
        if len(self.paths) > self.n_max:
            raise ValueError(f"paths: {len(self.paths)} paths exceed n_max={self.n_max}")
        if self.prefix_lens[-1] >= self.sampling.max_new_tokens:
            raise ValueError(
                f"prefix_lens: {self.prefix_lens[-1]} must be below sampling.max_new_tokens "
                f"({self.sampling.max_new_tokens})"
            )
        for name in self.scorers:
            if name in VIRTUAL_SCORERS:
                raise ValueError(f"scorers: '{name}' needs no recorded scores; leave it out")
        for i, p in enumerate(self.paths):
            want = {L for L in self.prefix_lens if L < p.length}
            for name in self.scorers:
                got = p.scores.get(name)
                if got is None and want:
                    raise ValueError(f"paths.{i}.scores: missing scorer '{name}'")
                missing = sorted(want - set(got or {}))
                if missing:
                    raise ValueError(f"paths.{i}.scores.{name}: missing prefix_len {missing[0]}")
        return self


@dataclass
class CalibrationSet:
    """Records of one or more files, checked to share prune points and scorers, plus dense arrays.

    Arrays (P problems, M = the smallest path count; extra paths of larger problems are dropped):
    ``correct_paths`` (P, M) bool, ``lengths`` (P, M) int, ``answers`` (P, M) int codes (-1 = none),
    ``answer_correct`` (P, A) bool per code, ``scores[scorer]`` (P, M, len(prefix_lens)), NaN where a
    path had finished (never read: finished paths are not scored).
    """

    records: list[CalibRecord]
    sources: list[str]
    prefix_lens: list[int]
    scorers: list[str]
    lengths: np.ndarray
    answers: np.ndarray
    answer_correct: np.ndarray
    scores: dict[str, np.ndarray]
    warnings: list[str] = field(default_factory=list)  # what loading had to cap or drop, for the CLI to print
    headers: list[RecordHeader | None] = field(default_factory=list)  # per file (None: an older file)

    @property
    def model_identity(self) -> dict:
        """The model identity ``sglang-stop calibrate`` recorded in the file headers ({} if none)."""
        return next((h.model for h in self.headers if h is not None and h.model), {})

    @property
    def n_problems(self) -> int:
        return len(self.records)

    @property
    def n_max(self) -> int:
        return int(self.lengths.shape[1])

    @property
    def task_len(self) -> float:
        """Mean full path length in tokens (the guideline's L_t)."""
        return float(self.lengths.mean())

    @property
    def max_new_tokens(self) -> int:
        return self.records[0].sampling.max_new_tokens

    def subset(self, idx: list[int] | np.ndarray) -> CalibrationSet:
        """A set over the given problems (for held-out splits)."""
        idx = [int(i) for i in idx]
        return from_records([self.records[i] for i in idx], self.sources)

    @property
    def all_scorers(self) -> list[str]:
        return [*VIRTUAL_SCORERS, *self.scorers]

    @cached_property
    def weight_scorers(self) -> list[str]:
        """Scorers usable with the weighted vote: the runtime's vote (sglang_stop.aggregate) rejects
        negative weights, so only scorers whose recorded scores are all >= 0 (random: uniform [0, 1))."""
        ok = [s for s in self.scorers if not (np.nanmin(self.scores[s], initial=0.0) < 0)]
        return ["random", *ok]


def from_records(records: list[CalibRecord], sources: list[str] | None = None) -> CalibrationSet:
    if not records:
        raise UserError("calibration set is empty")
    first = records[0]
    m = min(len(r.paths) for r in records)
    amax = max(len({p.answer for p in r.paths[:m] if p.answer is not None}) for r in records) + 1
    P = len(records)
    lengths = np.zeros((P, m), dtype=np.int64)
    answers = np.full((P, m), -1, dtype=np.int64)
    answer_correct = np.zeros((P, amax), dtype=bool)
    scores = {s: np.full((P, m, len(first.prefix_lens)), np.nan) for s in first.scorers}
    for i, r in enumerate(records):
        codes: dict[str, int] = {}
        for j, p in enumerate(r.paths[:m]):
            lengths[i, j] = p.length
            if p.answer is not None:
                c = codes.setdefault(p.answer, len(codes))
                answers[i, j] = c
                answer_correct[i, c] |= p.correct
            for s in first.scorers:
                got = p.scores.get(s, {})
                scores[s][i, j] = [got[L] if L < p.length else np.nan for L in first.prefix_lens]
    return CalibrationSet(
        records=records,
        sources=sources or [],
        prefix_lens=list(first.prefix_lens),
        scorers=list(first.scorers),
        lengths=lengths,
        answers=answers,
        answer_correct=answer_correct,
        scores=scores,
    )


def load_calibration(paths: str | Path | list[str | Path]) -> CalibrationSet:
    """Read and validate JSONL files (plain or ``.jsonl.gz``); every error names ``file:line`` and the field."""
    files = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not files:
        raise UserError("no calibration file given")
    records: list[CalibRecord] = []
    seen: dict[str, str] = {}
    ref: tuple[CalibRecord, str] | None = None
    where_of: list[str] = []
    headers: list[RecordHeader | None] = []
    for f in files:
        head = read_header(f)
        if head is not None and head.kind != "calibration":
            raise UserError(f"{f}: holds {head.kind} records, not calibration records")
        _same_model(headers, files, head, f)
        headers.append(head)
        line_no = _line_numbers(Path(f))
        for k, rec in enumerate(read_jsonl(f, CalibRecord)):
            where = f"{f}:{line_no[k]}"
            where_of.append(where)
            if ref is None:
                ref = (rec, where)
            else:
                r0, w0 = ref
                if rec.prefix_lens != r0.prefix_lens:
                    raise UserError(f"{where}: prefix_lens {rec.prefix_lens} differ from {r0.prefix_lens} ({w0})")
                if sorted(rec.scorers) != sorted(r0.scorers):
                    raise UserError(f"{where}: scorers {rec.scorers} differ from {r0.scorers} ({w0})")
                if rec.sampling.max_new_tokens != r0.sampling.max_new_tokens:
                    raise UserError(f"{where}: sampling.max_new_tokens differs from {w0}")
            key = f"{rec.task}/{rec.problem_id}"
            if key in seen:
                raise UserError(f"{where}: duplicate problem_id '{rec.problem_id}' (first at {seen[key]})")
            seen[key] = where
            records.append(rec)
    if not records:
        raise UserError(f"{', '.join(map(str, files))}: no calibration records")
    # Scorer order of the first record defines the array layout.
    order = records[0].scorers
    for r in records:
        r.scorers = list(order)
    cs = from_records(records, [str(f) for f in files])
    cs.warnings = _path_count_warnings(records, where_of)
    cs.headers = headers
    return cs


def _same_model(headers: list[RecordHeader | None], files: list, head: RecordHeader | None, f: str | Path) -> None:
    """Files recorded on other weights (both headers know the weights hash) do not combine."""
    new = (head.model if head else {}).get("weights_hash")
    for g, h in zip(files, headers):
        old = (h.model if h else {}).get("weights_hash")
        if new and old and new != old:
            raise UserError(f"{f}: recorded on model {head.model}, {g} on {h.model}: one calibration set is one model")  # type: ignore[union-attr]


def _path_count_warnings(records: list[CalibRecord], where_of: list[str]) -> list[str]:
    """The arrays keep the smallest path count of all problems: say so, naming the record that caps
    N (file:line and counts), instead of silently replaying N <= that count for every problem."""
    counts = [len(r.paths) for r in records]
    lo, hi = min(counts), max(counts)
    if lo == hi:
        return []
    i = counts.index(lo)
    fewer = sum(c < hi for c in counts)
    return [f"{where_of[i]}: problem '{records[i].problem_id}' has {lo} paths, others up to {hi} "
            f"({fewer} of {len(records)} records have fewer than {hi}); N is capped at {lo} for every "
            f"problem (the extra paths are dropped): drop or re-record the short records to replay N up to {hi}"]


def _line_numbers(p: Path) -> list[int]:
    """1-based line numbers of the lines read_jsonl yields: non-blank, complete, not a header line
    (a file from ``sglang-stop calibrate`` starts with one; the committed older sets have none)."""
    if not p.is_file():
        return []
    lines = read_data(p).split(b"\n")
    last = len(lines)
    return [i for i, raw in enumerate(lines, start=1) if raw.strip() and i != last and not _is_header_line(raw)]


def _is_header_line(raw: bytes) -> bool:
    if b'"header"' not in raw[:32]:  # cheap pre-check: records are long and never start so
        return False
    try:
        obj = json.loads(raw)
    except ValueError:
        return False
    return isinstance(obj, dict) and set(obj) == {"header"}
