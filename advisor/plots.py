"""PNG figures from replayed results: best accuracy vs budget per scorer, and the Pareto front."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from advisor.replay import ReplayResult
from advisor.search import best_under_budget, pareto_front
from sglang_stop.io import atomic_write_bytes


def plot_results(results: list[ReplayResult], out: str | Path, *, title: str = "", budget: float | None = None) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    toks = np.array([r.tokens for r in results])
    budgets = np.geomspace(toks.min(), toks.max(), 40)
    for scorer in sorted({r.config.scorer for r in results}):
        mine = [r for r in results if r.config.scorer == scorer or r.config.scorer == "none"]
        pts = [(b, best_under_budget(mine, b)) for b in budgets]
        xs = [b / 1024 for b, r in pts if r is not None]
        ys = [100 * r.accuracy for _, r in pts if r is not None]
        ax1.step(xs, ys, where="post", label=scorer if scorer != "none" else "none (no pruning)")
    ax1.set_xscale("log")
    ax1.set_xlabel("budget (k tokens per problem, all paths)")
    ax1.set_ylabel("best replayed accuracy (%)")
    ax1.set_title("accuracy vs budget per scorer")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.scatter(toks / 1024, [100 * r.accuracy for r in results], s=6, alpha=0.3, color="grey", label="configs")
    front = pareto_front(results)
    ax2.errorbar(
        [r.tokens / 1024 for r in front],
        [100 * r.accuracy for r in front],
        yerr=[[100 * (r.accuracy - r.ci_low) for r in front], [100 * (r.ci_high - r.accuracy) for r in front]],
        fmt="-o", ms=3, color="C3", capsize=2, label="Pareto front (95% interval)",
    )
    if budget is not None:
        for ax in (ax1, ax2):
            ax.axvline(budget / 1024, ls="--", color="k", lw=0.8)
    ax2.set_xscale("log")
    ax2.set_xlabel("expected tokens per problem (k)")
    ax2.set_ylabel("replayed accuracy (%)")
    ax2.set_title("Pareto front")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())
