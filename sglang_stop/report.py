"""Summaries of recorded runs (`sglang-stop run --out` files): the library behind `sglang-stop report`.

A run's accuracy gets a 95% bootstrap interval over problems. Resamples are drawn from ``seed`` over
the problems sorted by id, so the same files always give the same intervals, and runs over the same
problems are resampled *paired* (each resample picks the same problems for every run). Differences
against the first run are paired on the problems both hold: that interval is much tighter than the
two accuracies' intervals suggest, since both runs share the problems' difficulty.
Everything a user can get wrong (a missing file, a file of other records, an unknown problem id, a
PNG path matplotlib cannot write) is a :class:`UserError` naming the file, line or id, raised before
any figure is drawn.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from sglang_stop.errors import UserError
from sglang_stop.io import RecordHeader, atomic_write_bytes, read_data, read_header, read_jsonl
from sglang_stop.runner import ProblemOutcome, ProblemResult
from sglang_stop.tables import table

RESULTS_KIND = "run-results"
TEXT_CHARS = 80  # characters of a path's text in the per-problem view


class Run(BaseModel):
    """One results file: its header (None for files written before headers) and its problems."""

    path: str
    header: RecordHeader | None
    results: list[ProblemResult]
    warnings: list[str] = Field(default_factory=list, description="what reading it left out or found short")

    def setting(self, key: str) -> Any:
        """A field of the recorded RuntimeConfig (``scorer``, ``n``, ``stages``), None without a header."""
        if self.header is None:
            return None
        return (self.header.settings.get("config") or {}).get(key)

    @property
    def scorer(self) -> str | None:
        return (self.setting("scorer") or {}).get("name")

    @property
    def stages(self) -> Any:
        """The stages that ran: none for a scorer that never prunes (``none``), whatever the config lists."""
        stages = self.setting("stages")
        if stages and self.scorer is not None and not _prunes(self.scorer):
            return []
        return stages


def _prunes(scorer: str) -> bool:
    from sglang_stop.scorers import scorer_class

    try:
        return scorer_class(scorer).prunes
    except UserError:  # a scorer registered by a plugin not loaded here: trust the config
        return True


class RunStats(BaseModel):
    label: str = Field(description="file name plus scorer, n and stages")
    name: str = Field(description="file name (the path when two names collide)")
    path: str
    scorer: str | None
    n: int | None
    stages: str | None = Field(description="prune stages as prefix_len:keep, '-' for none")
    task: str | None
    model: str | None
    problems: int
    accuracy: float = Field(description="voted answer correct, fraction of problems")
    ci_low: float
    ci_high: float
    tokens_per_problem: float
    pruned_share: float = Field(description="fraction of all paths pruned at some stage")
    path_accuracy: float | None = Field(description="per-path correctness over paths that ran to the end")


class PairedDiff(BaseModel):
    """Accuracy of ``run`` minus the first run's (``baseline``), on the problems both hold, with a paired
    interval; runs are named by file."""

    run: str
    baseline: str
    problems: int
    diff: float
    ci_low: float
    ci_high: float


class Report(BaseModel):
    runs: list[RunStats]
    paired: list[PairedDiff] = Field(default_factory=list)
    boot: int
    seed: int
    warnings: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Loading


def load_run(path: str | Path) -> Run:
    """Read and check one results file (plain or ``.gz``): header optional, at least one problem,
    problem ids unique."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p}: is a directory, expected a results file (sglang-stop run --out)")
    data = read_data(p)  # missing file -> "file not found"
    header = read_header(p)
    if header is not None and header.kind != RESULTS_KIND:
        raise UserError(f"{p}: holds {header.kind} records, not {RESULTS_KIND} (sglang-stop run --out)")
    if header is None:
        _check_first_record(p, data)
    results = list(read_jsonl(p, ProblemResult))
    if not results:
        raise UserError(f"{p}: no problem results in the file")
    seen: set[str] = set()
    for r in results:
        if len(r.path_correct) != len(r.paths):
            raise UserError(f"{p}: problem {r.problem_id!r}: {len(r.path_correct)} path_correct entries for "
                            f"{len(r.paths)} paths")
        if r.problem_id in seen:
            raise UserError(f"{p}: problem {r.problem_id!r} appears twice (two runs appended to one file?)")
        seen.add(r.problem_id)
    warnings = []
    tail = data.rsplit(b"\n", 1)[-1]
    if tail.strip():  # read_jsonl skips it as an interrupted append
        warnings.append(f"{p}: the last line has no newline (an interrupted write?); that line is left out")
    asked = header.settings.get("problems") if header is not None else None
    if isinstance(asked, int) and len(results) < asked:
        warnings.append(f"{p}: {len(results)} of the {asked} problems asked are in the file (an interrupted run? "
                        f"rerun it with --resume to finish)")
    return Run(path=str(p), header=header, results=results, warnings=warnings)


def _check_first_record(p: Path, data: bytes) -> None:
    """Without a header, say plainly when the first record is not a problem result at all."""
    for i, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            return  # read_jsonl names the line and the JSON error
        if not isinstance(obj, dict) or "problem_id" not in obj:
            raise UserError(f"{p}:{i}: not a results file of `sglang-stop run --out` (no header, no problem_id)")
        return


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    if not paths:
        raise UserError("RESULTS: give at least one results file (sglang-stop run --out)")
    return [load_run(p) for p in paths]


# ---------------------------------------------------------------------------------------------
# Labels and statistics


def stages_text(stages: Any) -> str | None:
    """``[{"prefix_len": 8, "keep": 2}]`` -> ``8:2`` (a ratio as ``8:25%``); ``-`` for no stages."""
    if stages is None:
        return None
    if not stages:
        return "-"
    parts = []
    for st in stages:
        keep = st.get("keep")
        kept = str(keep) if keep is not None else f"{float(st.get('keep_ratio', 0)) * 100:g}%"
        parts.append(f"{st.get('prefix_len')}:{kept}")
    return ",".join(parts)


def run_names(runs: Sequence[Run]) -> list[str]:
    """Each run's file name; the full path when two names collide."""
    names = [Path(r.path).name for r in runs]
    return [r.path if names.count(name) > 1 else name for r, name in zip(runs, names)]


def run_labels(runs: Sequence[Run]) -> list[str]:
    """File name plus scorer, n and stages from the header."""
    labels = []
    for r, base in zip(runs, run_names(runs)):
        bits = [b for b in (r.scorer, f"n={r.setting('n')}" if r.setting("n") is not None else None,
                            f"stages={stages_text(r.stages)}" if r.stages is not None else None)
                if b]
        labels.append(f"{base} ({' '.join(bits)})" if bits else base)
    return labels


def _percentiles(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return float(lo), float(hi)


def _resamples(count: int, boot: int, seed: int) -> np.ndarray:
    """``boot`` x ``count`` problem indices; the same for every run of one report (paired)."""
    return np.random.default_rng(seed).integers(0, count, size=(boot, count))


def _correct_vector(run: Run, ids: Sequence[str]) -> np.ndarray:
    by_id = {r.problem_id: r.correct for r in run.results}
    return np.array([by_id[i] for i in ids], dtype=float)


def run_stats(run: Run, label: str, name: str, boot: int, seed: int) -> RunStats:
    ids = sorted(r.problem_id for r in run.results)
    correct = _correct_vector(run, ids)
    lo, hi = _percentiles(correct[_resamples(len(ids), boot, seed)].mean(axis=1))
    paths = [p for r in run.results for p in r.paths]
    full = [c for r in run.results for c, p in zip(r.path_correct, r.paths) if p.pruned_at is None]
    header = run.header
    return RunStats(
        label=label,
        name=name,
        path=run.path,
        scorer=run.scorer,
        n=run.setting("n"),
        stages=stages_text(run.stages),
        task=(header.settings.get("task") if header else None),
        model=(header.model.get("name") if header else None),
        problems=len(ids),
        accuracy=float(correct.mean()),
        ci_low=lo,
        ci_high=hi,
        tokens_per_problem=sum(r.tokens for r in run.results) / len(run.results),
        pruned_share=sum(p.pruned_at is not None for p in paths) / max(1, len(paths)),
        path_accuracy=(sum(full) / len(full)) if full else None,
    )


def paired_diff(base: Run, other: Run, names: tuple[str, str], boot: int, seed: int) -> PairedDiff | None:
    """``other`` minus ``base`` on their common problems, resampled together; None when none shared.
    ``names`` = (base's, other's)."""
    ids = sorted({r.problem_id for r in base.results} & {r.problem_id for r in other.results})
    if not ids:
        return None
    delta = _correct_vector(other, ids) - _correct_vector(base, ids)
    lo, hi = _percentiles(delta[_resamples(len(ids), boot, seed)].mean(axis=1))
    return PairedDiff(run=names[1], baseline=names[0], problems=len(ids), diff=float(delta.mean()),
                      ci_low=lo, ci_high=hi)


MAX_BOOT = 100_000  # resamples x problems indices are held in memory at once


def check_boot(boot: int) -> None:
    if not 100 <= boot <= MAX_BOOT:
        raise UserError(f"--boot: must be between 100 (for a 95% interval) and {MAX_BOOT}, got {boot}")


def build_report(runs: Sequence[Run], *, boot: int = 2000, seed: int = 0) -> Report:
    check_boot(boot)
    names = run_names(runs)
    stats = [run_stats(r, lab, name, boot, seed) for r, lab, name in zip(runs, run_labels(runs), names)]
    warnings = [w for r in runs for w in r.warnings]
    paired: list[PairedDiff] = []
    base_ids = {r.problem_id for r in runs[0].results}
    for run, name in zip(runs[1:], names[1:]):
        ids = {r.problem_id for r in run.results}
        d = paired_diff(runs[0], run, (names[0], name), boot, seed)
        if d is None:
            warnings.append(f"{name}: shares no problem with {names[0]}; no paired difference")
            continue
        if ids != base_ids:
            warnings.append(f"{name}: {len(ids ^ base_ids)} problems not in both it and {names[0]} are left out "
                            f"of their paired difference ({d.problems} shared)")
        paired.append(d)
    return Report(runs=stats, paired=paired, boot=boot, seed=seed, warnings=warnings)


# ---------------------------------------------------------------------------------------------
# Text


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _run_block(s: RunStats) -> str:
    lines = [
        s.label,
        "  " + "  ".join([*([f"task {s.task}"] if s.task else []), *([f"model {s.model}"] if s.model else []),
                          f"{s.problems} problems"]),
        f"  accuracy {s.accuracy:.3f}  95% CI [{s.ci_low:.3f}, {s.ci_high:.3f}]",
        f"  tokens/problem {s.tokens_per_problem:.1f}  pruned paths {s.pruned_share:.1%}  "
        f"per-path accuracy {_pct(s.path_accuracy)} (paths that ran to the end)",
    ]
    return "\n".join(lines)


def format_report(rep: Report) -> str:
    blocks = [_run_block(s) for s in rep.runs]
    if len(rep.runs) > 1:
        blocks.append(table(
            ["run", "scorer", "n", "stages", "problems", "accuracy", "95% CI", "tokens/problem", "pruned", "path acc"],
            [[s.name, s.scorer, s.n, s.stages, s.problems, s.accuracy, f"[{s.ci_low:.3f}, {s.ci_high:.3f}]",
              round(s.tokens_per_problem, 1), s.pruned_share, s.path_accuracy] for s in rep.runs],
        ))
    if rep.paired:
        blocks.append(table(
            ["run", "vs", "problems", "accuracy diff", "paired 95% CI"],
            [[d.run, d.baseline, d.problems, d.diff, f"[{d.ci_low:+.3f}, {d.ci_high:+.3f}]"] for d in rep.paired],
        ))
    paired = ", the same problems for every run (paired)" if len(rep.runs) > 1 else ""
    blocks.append(f"(95% intervals: {rep.boot} bootstrap resamples over problems{paired}, seed {rep.seed})")
    return "\n\n".join(blocks)


# ---------------------------------------------------------------------------------------------
# One problem, path by path


class PathView(BaseModel):
    index: int
    tokens: int
    pruned_at: int | None = Field(description="stage index it was pruned at; None = ran to the end")
    pruned_at_tokens: int | None = Field(None, description="that stage's prefix_len, when the header has it")
    stopped_by_consensus: bool
    scores: list[float]
    answer: str | None
    correct: bool
    text: str


class ProblemView(ProblemOutcome):
    label: str
    paths: list[PathView]


def problem_views(runs: Sequence[Run], problem_id: str) -> tuple[list[ProblemView], list[str]]:
    """The problem in every run that holds it, plus a warning per run that does not; UserError when
    no run holds it."""
    labels = run_labels(runs)
    views: list[ProblemView] = []
    missing: list[str] = []
    for run, lab in zip(runs, labels):
        res = next((r for r in run.results if r.problem_id == problem_id), None)
        if res is None:
            missing.append(lab)
            continue
        stages = run.stages or []
        paths = [
            PathView(
                index=p.index, tokens=p.tokens, pruned_at=p.pruned_at,
                pruned_at_tokens=(stages[p.pruned_at].get("prefix_len")
                                  if p.pruned_at is not None and p.pruned_at < len(stages) else None),
                stopped_by_consensus=p.stopped_by_consensus, scores=p.scores, answer=p.answer,
                correct=ok, text=p.text,
            )
            for p, ok in zip(res.paths, res.path_correct)
        ]
        outcome = {k: getattr(res, k) for k in ProblemOutcome.model_fields}
        views.append(ProblemView(label=lab, paths=paths, **outcome))
    if not views:
        some = ", ".join(r.problem_id for r in runs[0].results[:3])
        where = runs[0].path if len(runs) == 1 else f"any of the {len(runs)} files"
        raise UserError(f"--problem: no problem {problem_id!r} in {where} (ids look like: {some}, ...)")
    warnings = [f"{lab}: has no problem {problem_id!r}; left out" for lab in missing]
    return views, warnings


def _short(text: str, chars: int = TEXT_CHARS) -> str:
    flat = text.replace("\n", "\\n")
    return flat if len(flat) <= chars else flat[: chars - 3] + "..."


def format_problem(v: ProblemView) -> str:
    head = (f"{v.label}\n  problem {v.problem_id}: {_short(v.question)}\n"
            f"  gold {v.gold}  predicted {v.predicted}  {'right' if v.correct else 'wrong'}  tokens {v.tokens}")
    rows = []
    for p in v.paths:
        if p.pruned_at is not None:
            pruned = f"stage {p.pruned_at}" + (f" @{p.pruned_at_tokens}" if p.pruned_at_tokens is not None else "")
        else:
            pruned = "consensus" if p.stopped_by_consensus else "-"
        rows.append([p.index, p.tokens, pruned, " ".join(f"{s:.3g}" for s in p.scores) or "-", p.answer,
                     "right" if p.correct else "wrong", _short(p.text)])
    return head + "\n" + table(["path", "tokens", "pruned", "scores", "answer", "result", "text"], rows)


# ---------------------------------------------------------------------------------------------
# Figure


def check_png_path(path: str | Path) -> Path:
    """Refuse before any work a path matplotlib would not write as a PNG, or no matplotlib."""
    p = Path(path)
    if p.suffix.lower() != ".png":
        raise UserError(f"--png: {p}: the file name must end in .png")
    if p.is_dir():
        raise UserError(f"--png: {p}: is a directory")
    existing = next(d for d in [p.parent.absolute(), *p.parent.absolute().parents] if d.exists())
    if not existing.is_dir():
        raise UserError(f"--png: {p}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--png: {p}: directory {existing} is not writable")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError("--png: needs matplotlib (pip install matplotlib)") from None
    return p


def _dodged(xs: Sequence[float]) -> list[float]:
    """Runs at (nearly) equal tokens, as at a matched budget, are spread a little apart so their interval
    bars stay visible side by side."""
    span = (max(xs) - min(xs)) or max(abs(x) for x in xs) or 1.0
    step = 0.012 * span
    out = list(xs)
    groups: list[list[int]] = []
    for i in sorted(range(len(xs)), key=lambda k: xs[k]):
        if groups and xs[i] - xs[groups[-1][0]] < step:
            groups[-1].append(i)
        else:
            groups.append([i])
    for g in groups:
        for j, i in enumerate(g):
            out[i] = xs[i] + (j - (len(g) - 1) / 2) * step
    return out


def write_png(rep: Report, path: str | Path) -> None:
    """Accuracy (95% interval bars) against tokens per problem, one labelled point per run."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    p = check_png_path(path)
    xs = _dodged([s.tokens_per_problem for s in rep.runs])
    lo_x, hi_x = min(xs), max(xs)
    span = (hi_x - lo_x) or hi_x or 1.0
    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    try:
        for i, (s, x) in enumerate(zip(rep.runs, xs)):
            color = f"C{i % 10}"
            yerr = [[s.accuracy - s.ci_low], [s.ci_high - s.accuracy]]
            ax.errorbar([x], [s.accuracy], yerr=yerr, fmt="o", color=color, capsize=4, markersize=6)
            right_half = len(xs) > 1 and x > lo_x + span / 2
            ax.annotate(s.label, (x, s.accuracy), textcoords="offset points", xytext=(-8 if right_half else 8, 4),
                        ha="right" if right_half else "left", fontsize=8, color=color)
        ax.set_xlim(max(0.0, lo_x - 0.25 * span), hi_x + 0.25 * span)
        ax.set_ylim(max(0.0, min(s.ci_low for s in rep.runs) - 0.05), min(1.06, max(s.ci_high for s in rep.runs) + 0.06))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 2.5, 5, 10]))
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
        ax.set_xlabel("tokens per problem (all paths)")
        ax.set_ylabel("accuracy (voted answer)")
        paired = ", paired" if len(rep.runs) > 1 else ""
        ax.set_title(f"accuracy vs tokens: 95% bootstrap intervals ({rep.boot} resamples{paired})", fontsize=10)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    atomic_write_bytes(p, buf.getvalue())
