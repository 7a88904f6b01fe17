"""Non-learned baselines of the paper's taxonomy: none, random, and DeepConf's confidence, entropy and
chosen-token logprob (Type III: internal, non-learnable). They read only what the backend recorded while
sampling. The confidence measures follow DeepConf's code (github.com/facebookresearch/deepconf, helper.py
and analysis_offline.py): token confidence -mean(top-k logprobs), group confidence = sliding-window mean
(stride 1; a prefix shorter than the window is one group), reduced by lowest group, tail, or bottom-10%."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from sglang_stop.policy import bottom_window_mean, lowest_window_mean
from sglang_stop.scorers.base import Branch, ScoreContext, Scorer, ScorerOptions


class NoPruning(Scorer):
    """Keeps every path: the unpruned self-consistency baseline."""

    name = "none"
    prunes = False

    def score(self, branches: Sequence[Branch], ctx: ScoreContext) -> list[float]:
        return [0.0] * len(branches)


class RandomScorer(Scorer):
    """Keeps a uniformly random subset: the floor every signal must beat."""

    name = "random"
    nonnegative = True

    def score(self, branches: Sequence[Branch], ctx: ScoreContext) -> list[float]:
        return [ctx.rng.random() for _ in branches]


class WindowOptions(ScorerOptions):
    window: int | None = Field(None, ge=1, description="sliding window (tokens); null = whole prefix")
    reduce: Literal["mean", "lowest", "tail", "bottom10"] = Field(
        "mean",
        description="mean over the prefix; lowest window mean (DeepConf's lowest group confidence); the last "
        "window (tail); or the mean of the lowest 10% of window means (DeepConf's bottom-10%)",
    )


def _reduce(values: list[float], window: int | None, how: str) -> float:
    """DeepConf's trace-level reductions of per-token values (analysis_offline.py of
    facebookresearch/deepconf): a window longer than the prefix is the whole prefix."""
    if not values:
        return 0.0
    if how == "lowest":
        return lowest_window_mean(values, window)
    if how == "bottom10":
        return bottom_window_mean(values, window)
    if how == "tail" and window is not None:
        values = values[-window:]
    return sum(values) / len(values)


def token_confidences(branch: Branch, top_k: int) -> list[float]:
    """DeepConf's token confidence C_t = -mean of the top-k logprobs at each generated token
    (helper.py compute_confidence, which reads vLLM's top-20)."""
    return [-sum(t[:top_k]) / max(1, len(t[:top_k])) for t in branch.top_logprobs]


class ConfidenceOptions(WindowOptions):
    top_k: int = Field(20, ge=1, description="token confidence = -mean of the top-k logprobs")


class ConfidenceScorer(Scorer):
    """DeepConf token confidence C_i = -mean(top-k log p), reduced over the prefix (higher = surer)."""

    name = "confidence"
    Options = ConfidenceOptions
    nonnegative = True  # -mean(log p) >= 0

    def score(self, branches: Sequence[Branch], ctx: ScoreContext) -> list[float]:
        o: ConfidenceOptions = self.options  # type: ignore[assignment]
        return [_reduce(token_confidences(b, o.top_k), o.window, o.reduce) for b in branches]


class EntropyScorer(Scorer):
    """Negative mean next-token entropy over the prefix (low entropy = confident = kept)."""

    name = "entropy"
    Options = WindowOptions

    def score(self, branches: Sequence[Branch], ctx: ScoreContext) -> list[float]:
        o: WindowOptions = self.options  # type: ignore[assignment]
        return [_reduce([-h for h in b.entropies], o.window, o.reduce) for b in branches]


class LogprobScorer(Scorer):
    """Log p of the tokens the path actually chose, reduced over the prefix (higher = less surprised).

    ``window: 1, reduce: lowest`` is the single most surprising token: a model that knows the right
    step gives a slip low probability, which confidence (the spread of the top-k) can miss.
    """

    name = "logprob"
    Options = WindowOptions

    def score(self, branches: Sequence[Branch], ctx: ScoreContext) -> list[float]:
        o: WindowOptions = self.options  # type: ignore[assignment]
        return [_reduce(list(b.logprobs), o.window, o.reduce) for b in branches]
