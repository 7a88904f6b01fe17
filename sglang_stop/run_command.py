"""`sglang-stop run` as a library call: checks everything it can before the model loads, appends each
finished problem to ``--out`` (after a header record of what made the file), resumes an interrupted
file without repeating or losing a problem, and turns a signal into a clean, resumable stop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from sglang_stop.config import RuntimeConfig
from sglang_stop.errors import RunInterrupted, UserError
from sglang_stop.io import JsonlAppender, RecordHeader, check_header, open_records, read_header, read_jsonl, tree_hash
from sglang_stop.models import backend_identity
from sglang_stop.runner import ProblemResult, RunSummary, load_problems, make_backend, run_problems
from sglang_stop.signals import cancel_on_signals
from sglang_stop.tables import key_values
from sglang_stop.tasks import QUESTION_ID, Problem, Task, UngradedTask, load_task



class RunRequest(BaseModel):
    """Everything `run` was asked to do, validated before any work."""

    model_config = ConfigDict(extra="forbid")

    cfg: RuntimeConfig
    task: str | None = None
    problems: int = 20
    concurrency: int = 4
    out: str | None = None
    resume: bool = False
    server: str | None = None  # one server (kept for callers); ``servers`` for several
    servers: list[str] = []
    router: str | None = None
    question: str | None = None
    progress: bool = True


def results_header(cfg: RuntimeConfig, task: Task, problems: int, model: dict[str, Any] | None = None) -> RecordHeader:
    """The header of a run-results file: the settings a resumed run must repeat."""
    ckpt = cfg.scorer.options.get("checkpoint") if cfg.scorer.name == "stop" else None
    return RecordHeader(
        kind="run-results",
        settings={"config": cfg.model_dump(mode="json"), "task": task.spec, "problems": problems},
        model=model or {},
        scorer_checkpoint=tree_hash(ckpt) if isinstance(ckpt, str) else None,
        seed=cfg.seed,
    )


def _check_out(req: RunRequest, header: RecordHeader) -> list[ProblemResult]:
    """Refuse an unusable ``--out`` now; with --resume return the results it already holds."""
    if req.resume and not req.out:
        raise UserError("--resume: needs --out (the results file to continue)")
    if not req.out:
        return []
    p = Path(req.out)
    if p.is_dir():
        raise UserError(f"--out {p}: is a directory, expected a file path")
    if p.exists() and p.stat().st_size > 0:
        if not req.resume:
            raise UserError(f"--out {p}: exists; pass --resume to continue it, or choose another file")
        old = read_header(p)
        if old is None:
            raise UserError(f"--out {p}: has no header record (an older version's file); use another file")
        check_header(p, old, header.model_copy(update={"model": old.model}))  # the model is checked once loaded
        return list(read_jsonl(p, ProblemResult))
    parent = p.parent if str(p.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {p}: cannot create its directory ({e.strerror})") from None
    if not _writable(parent):
        raise UserError(f"--out {p}: directory {parent} is not writable")
    return []


def _writable(d: Path) -> bool:
    import os

    return os.access(d, os.W_OK | os.X_OK)


def execute_run(req: RunRequest) -> tuple[RunSummary, str]:
    """Run the request; returns the summary and its human-readable text."""
    cfg = req.cfg
    task = load_task(req.task or cfg.task or "default")
    if req.question is not None:
        if not req.question.strip():
            raise UserError("--question: empty")
        problems = [Problem(id=QUESTION_ID, question=req.question, answer="", source=task.spec)]
        task = UngradedTask(task)  # no gold answer (and a mix could not say which part would grade it)
    else:
        problems = load_problems(task, req.problems, cfg.seed)
    header = results_header(cfg, task, len(problems))
    earlier = _check_out(req, header)
    done = {r.problem_id for r in earlier}
    todo = [p for p in problems if p.id not in done]
    earlier = [r for r in earlier if r.problem_id in {p.id for p in problems}]
    from sglang_stop.backends.fleet import Fleet, program_backend

    fleet = Fleet.from_options([*([req.server] if req.server else []), *req.servers], req.router)
    backend: Any = program_backend(fleet) if fleet is not None else make_backend(cfg.model)
    app: JsonlAppender | None = None
    full_header = header.model_copy(update={"model": backend_identity(backend)})

    def keep(res: ProblemResult) -> None:
        nonlocal app
        if app is None:  # a new file appears with its first result, not before the checks have passed
            app = open_records(req.out, full_header, resume=True)  # type: ignore[arg-type]
        app.append(res)

    try:
        if req.out and earlier:
            app = open_records(req.out, full_header, resume=True)  # checks the model too
        with cancel_on_signals() as cancel:
            try:
                results, summary = run_problems(
                    backend, task, todo, cfg, concurrency=req.concurrency, progress=req.progress,
                    on_result=keep if req.out else None, cancel=cancel, earlier=earlier,
                )
            except RunInterrupted as e:
                if not req.out:
                    kept = "no --out was given, so results were not kept"
                elif e.done:
                    kept = f"{e.done} results are in {req.out}; rerun the same command with --resume to finish"
                else:
                    kept = "no problem had finished"
                raise RunInterrupted(e.signal_name, e.done, e.total, hint=kept) from None
    finally:
        if app is not None:
            app.close()
        backend.shutdown()
    order = {p.id: i for i, p in enumerate(problems)}
    results.sort(key=lambda r: order.get(r.problem_id, len(order)))
    return summary, (_question_text(results[0], summary) if req.question is not None else summary_text(summary, req))


def summary_text(s: RunSummary, req: RunRequest | None = None) -> str:
    stages = ", ".join(
        f"{st['prefix_len']}->{st.get('keep', st.get('keep_ratio'))}" for st in s.stages
    ) or "none (unpruned)"
    pairs: list[tuple[str, Any]] = [
        ("task", s.task), ("model", s.model), ("problems", s.problems),
        ("paths / stages", f"n={s.n}, prune {stages}, scorer {s.scorer}"),
        ("accuracy (vote)", s.accuracy), ("accuracy per path", s.path_accuracy),
        ("tokens per problem", round(s.tokens_per_problem, 1)), ("wall (s)", round(s.wall_s, 1)),
    ]
    if req is not None and req.out:
        pairs.append(("results", req.out))
    return key_values(pairs)


def _question_text(r: ProblemResult, s: RunSummary) -> str:
    kept = sum(p.pruned_at is None for p in r.paths)
    best = next((p for p in r.paths if p.pruned_at is None and p.answer == r.predicted), None)
    lines = [f"answer: {r.predicted if r.predicted is not None else '(none)'}",
             f"paths: {len(r.paths)} launched, {len(r.paths) - kept} pruned; {r.tokens} tokens; scorer {s.scorer}"]
    if best is not None:
        lines.append("reasoning of a path that gave it:\n" + best.text.strip())
    return "\n".join(lines)
