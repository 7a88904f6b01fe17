"""Non-learned baselines of the paper's taxonomy: none, random, and DeepConf-style confidence/entropy
(Type III: internal, non-learnable). They read only what the backend recorded while sampling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

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
    reduce: Literal["mean", "lowest", "tail"] = Field(
        "mean", description="mean over the prefix, lowest window mean (DeepConf), or the last window"
    )


def _reduce(values: list[float], window: int | None, how: str) -> float:
    if not values:
        return 0.0
    if window is None or window >= len(values) or how == "mean":
        if how == "tail" and window is not None:
            values = values[-window:]
        return sum(values) / len(values)
    if how == "tail":
        tail = values[-window:]
        return sum(tail) / len(tail)
    # lowest sliding-window mean (DeepConf's "lowest group confidence")
    s = sum(values[:window])
    best = s
    for i in range(window, len(values)):
        s += values[i] - values[i - window]
        best = min(best, s)
    return best / window


class ConfidenceOptions(WindowOptions):
    top_k: int = Field(20, ge=1, description="token confidence = -mean of the top-k logprobs")


class ConfidenceScorer(Scorer):
    """DeepConf token confidence C_i = -mean(top-k log p), reduced over the prefix (higher = surer)."""

    name = "confidence"
    Options = ConfidenceOptions
    nonnegative = True  # -mean(log p) >= 0

    def score(self, branches: Sequence[Branch], ctx: ScoreContext) -> list[float]:
        o: ConfidenceOptions = self.options  # type: ignore[assignment]
        out = []
        for b in branches:
            conf = [-sum(t[: o.top_k]) / max(1, len(t[: o.top_k])) for t in b.top_logprobs]
            out.append(_reduce(conf, o.window, o.reduce))
        return out


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
