"""Run the program over a task's problems and score the results: the library behind `sglang-stop run`
and the benchmarks. Problems run concurrently (``run_batch``) so the backend's decode batch stays full."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from sglang_stop.config import ModelSpec, RuntimeConfig
from sglang_stop.errors import UserError
from sglang_stop.program import PathRecord, parallel_reasoning
from sglang_stop.scorers import Scorer, make_scorer
from sglang_stop.tasks import Problem, Task


class ProblemResult(BaseModel):
    problem_id: str
    question: str
    gold: str
    predicted: str | None
    correct: bool
    tokens: int
    paths: list[PathRecord]
    path_correct: list[bool] = Field(description="per path (by index): its own extracted answer is right")


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


def run_problems(
    backend: Any,
    task: Task,
    problems: Sequence[Problem],
    cfg: RuntimeConfig,
    *,
    concurrency: int = 4,
    progress: bool = False,
    scorer: Scorer | None = None,
) -> tuple[list[ProblemResult], RunSummary]:
    """Run every problem through the program; ``scorer`` overrides the one the config names."""
    if scorer is None:
        scorer = make_scorer(cfg.scorer.name, cfg.scorer.options)
    tok = backend.tokenizer
    args = [
        {
            "prompt": format_prompt(task, cfg, tok, p.question),
            "cfg": cfg,
            "scorer": scorer,
            "extract_answer": task.extract_answer,
            "problem_key": p.id,
            "question": p.question,
        }
        for p in problems
    ]
    before = backend.usage()
    t0 = time.perf_counter()
    states = parallel_reasoning.run_batch(
        args, backend=backend, num_threads=max(1, min(concurrency, len(args))), progress_bar=progress
    )
    wall = time.perf_counter() - t0
    results = []
    for p, st in zip(problems, states):
        err = st.stream_executor.error_
        res = getattr(st, "ret_value", None)
        if res is None:
            raise RuntimeError(f"problem {p.id}: program failed: {err!r}")
        results.append(
            ProblemResult(
                problem_id=p.id,
                question=p.question,
                gold=p.answer,
                predicted=res.answer,
                correct=task.is_correct(p, res.answer),
                tokens=res.tokens,
                paths=res.paths,
                path_correct=[task.is_correct(p, path.answer) for path in res.paths],
            )
        )
    after = backend.usage()
    full = [c for r in results for c, path in zip(r.path_correct, r.paths) if path.pruned_at is None]
    tokens = sum(r.tokens for r in results)
    summary = RunSummary(
        task=task.spec,
        model=backend.get_model_name(),
        problems=len(results),
        n=cfg.n,
        stages=[s.model_dump(exclude_none=True) for s in cfg.stages],
        scorer=cfg.scorer.name,
        accuracy=sum(r.correct for r in results) / max(1, len(results)),
        path_accuracy=sum(full) / max(1, len(full)),
        tokens=tokens,
        tokens_per_problem=tokens / max(1, len(results)),
        wall_s=wall,
        backend_usage={k: getattr(after, k) - getattr(before, k) for k in type(after).model_fields},
    )
    return results, summary


def load_problems(task: Task, count: int, seed: int) -> list[Problem]:
    if count < 1:
        raise UserError(f"--problems: must be >= 1, got {count}")
    probs = task.problems(count, seed)
    if not probs:
        raise UserError(f"task {task.spec!r}: no problems")
    return probs
