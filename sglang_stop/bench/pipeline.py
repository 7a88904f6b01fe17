"""Pruned vs unpruned on the same problems and seeds, in one run.

Path i of a problem gets the same seed in both runs, so its prefix is the same path: the unpruned
run's lengths give the cost model's prediction for the pruned run exactly
(sum over paths of min(len, Lp) + the kept paths' remaining tokens), which the measured
token ratio must match.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from sglang_stop.config import RuntimeConfig
from sglang_stop.runner import ProblemResult, RunSummary, run_problems
from sglang_stop.tasks import Problem, Task


class PipelineBench(BaseModel):
    problems: int
    n: int
    prefix_len: int
    keep: int
    scorer: str
    tokens_unpruned: int
    tokens_pruned: int
    tokens_ratio: float
    predicted_tokens_ratio: float  # cost model on the unpruned run's measured lengths and the kept paths
    predicted_tokens_ratio_mean: float  # N*Lp + K*(mean len - Lp) over N*mean len, means only
    accuracy_unpruned: float
    accuracy_pruned: float
    path_accuracy_unpruned: float
    wall_unpruned_s: float
    wall_pruned_s: float
    wall_ratio: float  # one problem at a time
    concurrency: int
    wall_unpruned_batched_s: float | None = None
    wall_pruned_batched_s: float | None = None
    wall_ratio_batched: float | None = None  # `concurrency` problems at once (run_batch)


def predicted_ratio(unpruned: list[ProblemResult], pruned: list[ProblemResult], lp: int) -> float:
    num = den = 0
    for u, p in zip(unpruned, pruned):
        lens = {path.index: path.tokens for path in u.paths}
        kept = {path.index for path in p.paths if path.pruned_at is None}
        for i, n_tok in lens.items():
            den += n_tok
            num += min(n_tok, lp) + (max(0, n_tok - lp) if i in kept else 0)
    return num / max(1, den)


def mean_ratio(unpruned: list[ProblemResult], n: int, lp: int, k: int) -> float:
    lens = [path.tokens for r in unpruned for path in r.paths]
    mean_len = sum(lens) / max(1, len(lens))
    mean_pre = sum(min(x, lp) for x in lens) / max(1, len(lens))
    mean_rest = sum(max(0, x - lp) for x in lens) / max(1, len(lens))
    return (n * mean_pre + k * mean_rest) / max(1e-9, n * mean_len)


def run_pipeline_bench(
    backend: Any,
    task: Task,
    problems: list[Problem],
    base: RuntimeConfig,
    *,
    prefix_len: int,
    keep: int,
    scorer: str,
    concurrency: int = 4,
    progress: bool = False,
) -> PipelineBench:
    def variant(**changes: Any) -> RuntimeConfig:
        return RuntimeConfig.model_validate({**base.model_dump(), **changes})

    unpruned_cfg = variant(stages=[], scorer={"name": "none"})
    pruned_cfg = variant(
        stages=[{"prefix_len": prefix_len, "keep": keep}],
        scorer={"name": scorer, "options": base.scorer.options if base.scorer.name == scorer else {}},
    )
    # warm-up: first forwards allocate and tune kernels; keep them out of both timings
    run_problems(backend, task, problems[:1], variant(stages=[], scorer={"name": "none"}, n=2), concurrency=1)

    def both(conc: int) -> tuple[tuple[list[ProblemResult], RunSummary], tuple[list[ProblemResult], RunSummary]]:
        how = "1 at a time" if conc == 1 else f"{conc} at a time"
        u = run_problems(backend, task, problems, unpruned_cfg, concurrency=conc, progress=progress,
                         progress_desc=f"unpruned, {how}")
        p = run_problems(backend, task, problems, pruned_cfg, concurrency=conc, progress=progress,
                         progress_desc=f"pruned, {how}")
        return u, p

    (u_res, u_sum), (p_res, p_sum) = both(1)
    out = PipelineBench(
        problems=len(problems),
        n=base.n,
        prefix_len=prefix_len,
        keep=keep,
        scorer=scorer,
        tokens_unpruned=u_sum.tokens,
        tokens_pruned=p_sum.tokens,
        tokens_ratio=p_sum.tokens / max(1, u_sum.tokens),
        predicted_tokens_ratio=predicted_ratio(u_res, p_res, prefix_len),
        predicted_tokens_ratio_mean=mean_ratio(u_res, base.n, prefix_len, keep),
        accuracy_unpruned=u_sum.accuracy,
        accuracy_pruned=p_sum.accuracy,
        path_accuracy_unpruned=u_sum.path_accuracy,
        wall_unpruned_s=u_sum.wall_s,
        wall_pruned_s=p_sum.wall_s,
        wall_ratio=p_sum.wall_s / max(1e-9, u_sum.wall_s),
        concurrency=concurrency,
    )
    if concurrency > 1:
        (_, ub), (_, pb) = both(concurrency)
        out.wall_unpruned_batched_s = ub.wall_s
        out.wall_pruned_batched_s = pb.wall_s
        out.wall_ratio_batched = pb.wall_s / max(1e-9, ub.wall_s)
    return out


def pipeline_text(b: PipelineBench) -> str:
    """The human-readable form: pruned vs unpruned side by side, then the ratios."""
    from sglang_stop.tables import key_values, table

    head = f"bench pipeline: {b.problems} problems, n={b.n}, prune at {b.prefix_len} keep {b.keep}, scorer {b.scorer}"
    rows = [
        ["unpruned", b.accuracy_unpruned, b.tokens_unpruned, b.wall_unpruned_s, b.wall_unpruned_batched_s],
        ["pruned", b.accuracy_pruned, b.tokens_pruned, b.wall_pruned_s, b.wall_pruned_batched_s],
    ]
    t = table(["run", "accuracy", "tokens", "wall s (1 at a time)", f"wall s ({b.concurrency} at a time)"], rows)
    ratios = key_values([
        ("tokens ratio (measured)", b.tokens_ratio),
        ("tokens ratio (cost model)", b.predicted_tokens_ratio),
        ("wall ratio (1 at a time)", b.wall_ratio),
        (f"wall ratio ({b.concurrency} at a time)", b.wall_ratio_batched),
    ])
    return f"{head}\n{t}\n\n{ratios}"
