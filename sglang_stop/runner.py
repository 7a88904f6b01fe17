"""Run the program over a task's problems and score the results: the library behind `sglang-stop run`
and the benchmarks.

Problems run ``concurrency`` at a time on worker threads so the backend's decode batch stays full.
Each finished problem is handed to ``on_result`` at once (``run --out`` appends it), so a crash or a
signal loses nothing finished. An error in any problem, or ``cancel`` being set (a signal), stops the
run promptly: queued problems never start, running ones are aborted in the backend, and their
programs end every branch on the way out (no worker thread is left alive).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from sglang_stop.config import ModelSpec, RuntimeConfig
from sglang_stop.errors import RunCancelled, RunInterrupted, UserError
from sglang_stop.program import PathRecord, parallel_reasoning
from sglang_stop.scorers import Scorer, make_scorer
from sglang_stop.tasks import Problem, Task


class ProblemOutcome(BaseModel):
    """One problem's answer against its gold, and what it cost (the run record and the report's view)."""

    problem_id: str
    question: str
    gold: str
    predicted: str | None
    correct: bool
    tokens: int


class ProblemResult(ProblemOutcome):
    paths: list[PathRecord]
    path_correct: list[bool] = Field(description="per path (by index): its own extracted answer is right")
    votes: dict[str, float] = Field(default_factory=dict, description="the program's vote: answer -> votes/weight")


class RunSummary(BaseModel):
    task: str
    model: str
    problems: int
    n: int
    stages: list[dict[str, Any]]
    scorer: str
    accuracy: float = Field(description="voted answer correct, fraction of problems")
    path_accuracy: float = Field(description="mean per-path correctness over paths that ran to the end")
    tokens: int = Field(description="sampled tokens, all paths of all problems")
    tokens_per_problem: float
    wall_s: float
    backend_usage: dict[str, int] = Field(default_factory=dict)


def format_prompt(task: Task, cfg: RuntimeConfig, tokenizer: Any, question: str) -> str:
    """The task's (or config's) prompt, wrapped in the model's chat template when asked."""
    text = task.format_prompt(question, cfg.prompt)
    use_chat = task.chat_template if cfg.chat_template is None else cfg.chat_template
    if use_chat and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    return text


def make_backend(spec: ModelSpec, model_override: str | None = None) -> Any:
    from sglang_stop.backends.local import LocalBackend
    from sglang_stop.models import load_model

    path = model_override if model_override is not None else spec.path
    model, tok = load_model(path, device=spec.device, dtype=spec.dtype)
    name = Path(path).name if path else "smollm2-135m-instruct"
    return LocalBackend(model, tok, model_name=name)


GRACE_S = 0.5  # after a cancel, how long running programs get to unwind before the runner returns


def check_prompts_fit(backend: Any, prompts: Sequence[str], problems: Sequence[Problem], cfg: RuntimeConfig) -> None:
    """Refuse, before decoding, a prompt that with ``max_new_tokens`` exceeds the model's context window."""
    window = context_window(backend)
    if window is None:
        return
    tok = backend.tokenizer
    for p, prompt in zip(problems, prompts):
        n = len(tok(prompt, add_special_tokens=True)["input_ids"])
        if n + cfg.sampling.max_new_tokens > window:
            raise UserError(
                f"problem {p.id}: prompt of {n} tokens + sampling.max_new_tokens {cfg.sampling.max_new_tokens} "
                f"exceeds the model's context window ({window} tokens)"
            )


def context_window(backend: Any) -> int | None:
    model = getattr(backend, "model", None)
    if model is None:
        return None
    c = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    window = getattr(c, "max_position_embeddings", None)
    return int(window) if isinstance(window, int) and window > 0 else None


def run_problems(
    backend: Any,
    task: Task,
    problems: Sequence[Problem],
    cfg: RuntimeConfig,
    *,
    concurrency: int = 4,
    progress: bool = False,
    scorer: Scorer | None = None,
    on_result: Callable[[ProblemResult], None] | None = None,
    cancel: threading.Event | None = None,
    earlier: Sequence[ProblemResult] = (),
    progress_desc: str = "problems",
) -> tuple[list[ProblemResult], RunSummary]:
    """Run every problem through the program; ``scorer`` overrides the one the config names.

    ``earlier``: results of a resumed run (counted in the summary, not rerun). Raises the first
    problem's error (others are cancelled), or :class:`RunInterrupted` when ``cancel`` is set.
    """
    if concurrency < 1:
        raise UserError(f"--concurrency: must be >= 1, got {concurrency}")
    if scorer is None:
        scorer = make_scorer(cfg.scorer.name, cfg.scorer.options)
    if cfg.aggregation.method == "weighted" and cfg.online is None and not scorer.nonnegative:
        # online mode weighs votes by each path's lowest window confidence (>= 0), not by scores
        raise UserError(
            f"aggregation.method: 'weighted' needs a scorer with non-negative scores (e.g. stop, confidence); "
            f"{scorer.name!r} can score below 0"
        )
    tok = backend.tokenizer
    prompts = [format_prompt(task, cfg, tok, p.question) for p in problems]
    scorer.prepare(backend)
    check_prompts_fit(backend, prompts, problems, cfg)
    args = [
        {
            "prompt": prompt,
            "cfg": cfg,
            "scorer": scorer,
            "extract_answer": task.extract_answer,
            "problem_key": p.id,
            "question": p.question,
        }
        for p, prompt in zip(problems, prompts)
    ]
    before = backend.usage()
    t0 = time.perf_counter()
    by_index = _run_all(backend, task, problems, args, concurrency, progress, on_result, cancel, len(earlier),
                        progress_desc)
    wall = time.perf_counter() - t0
    results = list(earlier) + [by_index[i] for i in sorted(by_index)]
    after = backend.usage()
    summary = summarize(results, task=task.spec, model=backend.get_model_name(), cfg=cfg, wall_s=wall,
                        backend_usage={k: getattr(after, k) - getattr(before, k) for k in type(after).model_fields})
    return results, summary


def _run_all(
    backend: Any,
    task: Task,
    problems: Sequence[Problem],
    args: list[dict[str, Any]],
    concurrency: int,
    progress: bool,
    on_result: Callable[[ProblemResult], None] | None,
    cancel: threading.Event | None,
    already: int,
    desc: str,
) -> dict[int, ProblemResult]:
    """Run the programs on a thread pool; collect results as they finish (index -> result)."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=already + len(args), initial=already, desc=desc, unit="problem", dynamic_ncols=True)
    pool = ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(args))), thread_name_prefix="sglang-stop-run")
    futures: dict[Future[Any], int] = {pool.submit(_run_one, backend, a): i for i, a in enumerate(args)}
    out: dict[int, ProblemResult] = {}
    error: BaseException | None = None
    pending = set(futures)
    correct = 0
    try:
        while pending:
            done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
            for f in done:
                i = futures[f]
                exc = f.exception()
                if exc is not None:
                    if error is None and not isinstance(exc, RunCancelled):
                        error = _problem_error(problems[i], exc)
                    continue
                res = _result(task, problems[i], f.result())
                out[i] = res
                correct += res.correct
                if on_result is not None:
                    on_result(res)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(accuracy=f"{correct / len(out):.2f}", refresh=False)
            if error is not None or (cancel is not None and cancel.is_set()):
                break
    finally:
        if pending:
            _cancel(backend, pool, pending)
            for f in [f for f in pending if f.done() and not f.cancelled() and f.exception() is None]:
                i = futures[f]
                out[i] = res = _result(task, problems[i], f.result())
                if on_result is not None:
                    on_result(res)
        pool.shutdown(wait=False, cancel_futures=True)
        _resume_when_done(backend, [f for f in pending if not f.done()])
        if bar is not None:
            bar.close()
    if error is not None:
        raise error
    if cancel is not None and cancel.is_set() and len(out) < len(args):
        raise RunInterrupted(getattr(cancel, "signal_name", "cancel"), already + len(out), already + len(args))
    return out


def _resume_when_done(backend: Any, running: list[Future[Any]]) -> None:
    """Lift an abort once the aborted programs have all unwound (not before: one that was between
    two generate calls would otherwise carry on decoding)."""
    if not hasattr(backend, "resume_requests"):
        return
    if not running:
        backend.resume_requests()
        return
    left = [len(running)]
    lock = threading.Lock()

    def one_done(_f: Future[Any]) -> None:
        with lock:
            left[0] -= 1
            if left[0] == 0:
                backend.resume_requests()

    for f in running:
        f.add_done_callback(one_done)


def _run_one(backend: Any, a: dict[str, Any]) -> Any:
    st = parallel_reasoning.run(**a, backend=backend)
    res = getattr(st, "ret_value", None)
    if res is None:
        raise RuntimeError(f"program returned nothing: {st.stream_executor.error_!r}")
    return res


def _cancel(backend: Any, pool: ThreadPoolExecutor, pending: set[Future[Any]]) -> None:
    """Never start queued problems; abort running ones in the backend and give them GRACE_S to unwind."""
    for f in pending:
        f.cancel()
    if hasattr(backend, "abort"):
        backend.abort(RunCancelled("run cancelled"))
    wait([f for f in pending if not f.cancelled()], timeout=GRACE_S)


def _problem_error(p: Problem, exc: BaseException) -> BaseException:
    """A user error names the problem it happened on; a bug keeps its own exception (and traceback)."""
    if isinstance(exc, UserError):
        return UserError(f"problem {p.id}: {exc}")
    return exc


def _result(task: Task, p: Problem, res: Any) -> ProblemResult:
    return ProblemResult(
        problem_id=p.id,
        question=p.question,
        gold=p.answer,
        predicted=res.answer,
        correct=task.is_correct(p, res.answer),
        tokens=res.tokens,
        paths=res.paths,
        path_correct=[task.is_correct(p, path.answer) for path in res.paths],
        votes=res.votes,
    )


def summarize(
    results: Sequence[ProblemResult], *, task: str, model: str, cfg: RuntimeConfig, wall_s: float,
    backend_usage: dict[str, int] | None = None,
) -> RunSummary:
    """Accuracy and tokens over ``results`` (the one definition: run, resume and report use it)."""
    full = [c for r in results for c, path in zip(r.path_correct, r.paths) if path.pruned_at is None]
    tokens = sum(r.tokens for r in results)
    return RunSummary(
        task=task,
        model=model,
        problems=len(results),
        n=cfg.n,
        stages=[s.model_dump(exclude_none=True) for s in cfg.stages],
        scorer=cfg.scorer.name,
        accuracy=sum(r.correct for r in results) / max(1, len(results)),
        path_accuracy=sum(full) / max(1, len(full)),
        tokens=tokens,
        tokens_per_problem=tokens / max(1, len(results)),
        wall_s=wall_s,
        backend_usage=backend_usage or {},
    )


def load_problems(task: Task, count: int, seed: int) -> list[Problem]:
    if count < 1:
        raise UserError(f"--problems: must be >= 1, got {count}")
    probs = task.problems(count, seed)
    if not probs:
        raise UserError(f"task {task.spec!r}: no problems")
    return probs
