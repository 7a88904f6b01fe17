"""Scorers compared at matched budget: the same problems, seeds, N, prefix length and K for each,
so only the choice of kept paths differs. Accuracy with paired bootstrap 95% intervals over problems."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from sglang_stop.config import RuntimeConfig
from sglang_stop.runner import run_problems
from sglang_stop.tasks import Problem, Task


ONLINE_ROW = "deepconf-online"


class ScorerResult(BaseModel):
    accuracy: float
    ci_low: float
    ci_high: float
    tokens: float  # per problem
    path_accuracy: float
    wall_s: float


class CompareBench(BaseModel):
    task: str
    model: str
    problems: int
    n: int
    prefix_len: int
    keep: int
    boot: int
    scorers: dict[str, ScorerResult]
    # fraction of bootstrap resamples where STOP's accuracy beats each other scorer's (paired)
    p_stop_better: dict[str, float] = {}


def bootstrap_ci(correct: Sequence[float], boot: int, seed: int) -> tuple[float, float]:
    rng = random.Random(seed)
    n = len(correct)
    accs = sorted(sum(correct[rng.randrange(n)] for _ in range(n)) / n for _ in range(boot))
    return accs[int(0.025 * boot)], accs[min(boot - 1, int(0.975 * boot))]


def paired_win_rate(a: Sequence[float], b: Sequence[float], boot: int, seed: int) -> float:
    rng = random.Random(seed)
    n = len(a)
    wins = 0
    for _ in range(boot):
        idx = [rng.randrange(n) for _ in range(n)]
        wins += sum(a[i] for i in idx) > sum(b[i] for i in idx)
    return wins / boot


def run_compare_bench(
    backend: Any,
    task: Task,
    problems: list[Problem],
    base: RuntimeConfig,
    *,
    scorers: dict[str, dict[str, Any]],
    prefix_len: int,
    keep: int,
    concurrency: int = 8,
    boot: int = 2000,
    seed: int = 0,
    progress: bool = False,
    online: dict[str, Any] | None = None,
) -> CompareBench:
    """``online``: add a row ``deepconf-online`` (DeepConf's online mode with these options, no prune
    stage, same N) beside the scorers."""
    out: dict[str, ScorerResult] = {}
    correct: dict[str, list[bool]] = {}
    rows = {name: {"stages": [] if name == "none" else [{"prefix_len": prefix_len, "keep": keep}],
                   "scorer": {"name": name, "options": opts}} for name, opts in scorers.items()}
    if online is not None:
        rows[ONLINE_ROW] = {"stages": [], "scorer": {"name": "none"}, "online": online}
    for name, row in rows.items():
        cfg = RuntimeConfig.model_validate({**base.model_dump(), **row})
        results, summary = run_problems(backend, task, problems, cfg, concurrency=concurrency, progress=progress,
                                        progress_desc=f"scorer {name}")
        correct[name] = [r.correct for r in results]
        lo, hi = bootstrap_ci(correct[name], boot, seed)
        out[name] = ScorerResult(
            accuracy=summary.accuracy, ci_low=lo, ci_high=hi, tokens=summary.tokens_per_problem,
            path_accuracy=summary.path_accuracy, wall_s=summary.wall_s,
        )
    wins = {}
    if "stop" in correct:
        wins = {k: paired_win_rate(correct["stop"], v, boot, seed) for k, v in correct.items() if k != "stop"}
    return CompareBench(
        task=task.spec, model=backend.get_model_name(), problems=len(problems), n=base.n, prefix_len=prefix_len,
        keep=keep, boot=boot, scorers=out, p_stop_better=wins,
    )


def compare_text(b: CompareBench) -> str:
    """One row per scorer: accuracy with its bootstrap interval, tokens, and P(STOP better)."""
    from sglang_stop.tables import table

    head = (f"bench compare: {b.problems} problems of {b.task} on {b.model}; n={b.n}, prune at {b.prefix_len} "
            f"keep {b.keep}; 95% bootstrap intervals ({b.boot} resamples)")
    rows = [[name, r.accuracy, f"[{r.ci_low:.3f}, {r.ci_high:.3f}]", round(r.tokens, 1), r.path_accuracy,
             b.p_stop_better.get(name)] for name, r in b.scorers.items()]
    return head + "\n" + table(["scorer", "accuracy", "95% CI", "tokens/problem", "per path", "P(stop better)"], rows)
