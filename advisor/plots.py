"""PNG figures from replayed results: best accuracy vs budget per scorer, and the Pareto front.

Both x axes are tokens per problem (all paths) on a log scale with plain tick labels (200, 1,000,
...: no "2x10^-1 k tokens"); the left panel shades each curve's 95% interval, the budget line is
labelled, and every Pareto point says which policy it is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from sglang_stop.advisor.replay import ReplayConfig, ReplayResult
from sglang_stop.advisor.search import best_under_budget, pareto_front
from sglang_stop.io import atomic_write_bytes

#: Pareto points annotated at most (evenly spread, cheapest and most accurate always); the rest
#: would overprint each other.
MAX_LABELS = 14


def short_label(cfg: ReplayConfig) -> str:
    """``N16 12:4 stop`` (``w`` = weighted vote; ``N8`` alone = unpruned)."""
    st = " ".join(f"{s.prefix_len}:{s.keep}" for s in cfg.stages)
    parts = [f"N{cfg.n}", st, cfg.scorer if cfg.stages else "", "w" if cfg.aggregation == "weighted" else ""]
    return " ".join(p for p in parts if p)


def _token_axis(ax: Any, lo: float, hi: float) -> None:
    """Log x axis in tokens with plain labels: 1-2-5 ticks over up to two decades, decades beyond."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    decades = math.log10(max(hi, lo * 1.0001) / lo)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 2 else (1.0,)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:,.0f}" if x >= 1 else f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(lo / 1.15, hi * 1.15)


def _budget_line(ax: Any, budget: float) -> None:
    ax.axvline(budget, ls="--", color="k", lw=0.9, label=f"budget {budget:,.0f} tokens")


def _annotate_front(ax: Any, front: list[ReplayResult]) -> None:
    idx = list(range(len(front)))
    if len(idx) > MAX_LABELS:
        idx = sorted(set(np.linspace(0, len(front) - 1, MAX_LABELS).round().astype(int).tolist()))
    for k, i in enumerate(idx):
        r = front[i]
        ax.annotate(short_label(r.config), (r.tokens, 100 * r.accuracy), xytext=(4, -9 if k % 2 else 5),
                    textcoords="offset points", fontsize=6, color="C3")


def plot_results(results: list[ReplayResult], out: str | Path, *, title: str = "", budget: float | None = None) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    toks = np.array([r.tokens for r in results])
    lo, hi = float(toks.min()), float(toks.max())
    if budget is not None:
        lo, hi = min(lo, budget), max(hi, budget)
    budgets = np.geomspace(toks.min(), toks.max(), 60)
    for i, scorer in enumerate(sorted({r.config.scorer for r in results})):
        mine = [r for r in results if r.config.scorer == scorer or r.config.scorer == "none"]
        pts = [(b, best_under_budget(mine, b)) for b in budgets]
        xs = np.array([b for b, r in pts if r is not None])
        best = [r for _, r in pts if r is not None]
        ys = np.array([100 * r.accuracy for r in best])
        color = f"C{i}"
        ax1.step(xs, ys, where="post", color=color, label=scorer if scorer != "none" else "none (no pruning)")
        lo_ci, hi_ci = [100 * r.ci_low for r in best], [100 * r.ci_high for r in best]
        ax1.fill_between(xs, lo_ci, hi_ci, step="post", color=color, alpha=0.06, lw=0)
        for edge in (lo_ci, hi_ci):
            ax1.step(xs, edge, where="post", color=color, lw=0.6, ls=":")
    _token_axis(ax1, lo, hi)
    ax1.set_xlabel("budget (tokens per problem, all paths)")
    ax1.set_ylabel("best replayed accuracy (%); dotted: 95% interval")
    ax1.set_title("accuracy vs budget per scorer")
    ax1.grid(alpha=0.3, which="both")
    ax2.scatter(toks, [100 * r.accuracy for r in results], s=6, alpha=0.3, color="grey", label="replayed configs")
    front = pareto_front(results)
    ax2.errorbar(
        [r.tokens for r in front],
        [100 * r.accuracy for r in front],
        yerr=[[100 * (r.accuracy - r.ci_low) for r in front], [100 * (r.ci_high - r.accuracy) for r in front]],
        fmt="-o", ms=3, color="C3", capsize=2, label="Pareto front (95% interval)",
    )
    _annotate_front(ax2, front)
    if budget is not None:
        for ax in (ax1, ax2):
            _budget_line(ax, budget)
    _token_axis(ax2, lo, hi)
    ax2.set_xlabel("expected tokens per problem (all paths)")
    ax2.set_ylabel("replayed accuracy (%)")
    ax2.set_title("Pareto front (label: N, prune point:keep, scorer; w = weighted vote)", fontsize=9)
    ax2.grid(alpha=0.3, which="both")
    for ax in (ax1, ax2):
        ax.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())
