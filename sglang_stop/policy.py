"""The pruning and voting rules, written once (pure functions): how many paths a stage keeps, which
ones, and how votes are weighted. The program, the advisor's exact check and its replay all call these.

Higher score first; scores equal up to float noise are ties, broken by path index. Noise matters:
the same prefix scored in a different batch shape (continuous batching admits branches in
timing-dependent order) differs by ~1e-7, and identical paths are common, so an exact sort would
keep different paths from run to run and a resumed run would not reproduce an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

SCORE_TIE_RTOL = 1e-6  # relative gap below which two scores are the same score


def rank_paths(scores: Sequence[float], indices: Sequence[int]) -> list[int]:
    """Positions into ``scores`` from best to worst (ties within SCORE_TIE_RTOL by lower index)."""
    by_score = sorted(range(len(scores)), key=lambda j: (-scores[j], indices[j]))
    groups: list[list[int]] = []
    for j in by_score:
        if groups and _same(scores[groups[-1][-1]], scores[j]):
            groups[-1].append(j)
        else:
            groups.append([j])
    return [j for g in groups for j in sorted(g, key=lambda j: indices[j])]


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= SCORE_TIE_RTOL * max(1.0, abs(a), abs(b))


def kept_positions(scores: Sequence[float], indices: Sequence[int], k: int) -> set[int]:
    """The positions of the ``k`` best paths."""
    return set(rank_paths(scores, indices)[:k])


def keep_count(alive: int, keep: int | None = None, keep_ratio: float | None = None) -> int:
    """Paths a stage keeps of ``alive``: ``keep`` (at most alive), or ``ceil(alive * keep_ratio)``, at
    least 1. The product is read up to float noise (920 * 0.55 is 506, not 506.00000000000006 -> 507)."""
    if keep is not None:
        return min(keep, alive)
    if keep_ratio is None:
        raise ValueError("give keep or keep_ratio")
    return max(1, min(alive, math.ceil(alive * keep_ratio - 1e-9)))


def vote_weights(last_scores: Mapping[int, float], voters: Sequence[int]) -> list[float] | None:
    """Weights of a weighted vote: each voter weighs its last stage's score; a voter never scored (it
    finished before the first prune point) weighs the mean of all last scores. None when nothing was
    scored: the vote is then a plain majority."""
    if not last_scores:
        return None
    mean = sum(last_scores.values()) / len(last_scores)
    return [last_scores.get(i, mean) for i in voters]


# --- DeepConf's group confidences and its online rule (facebookresearch/deepconf: helper.py
# compute_confidence / compute_least_grouped, analysis_offline.py calculate_bottom_window_confidence,
# deepconf-online.py). Token confidence C_t = -mean of the top-k logprobs at token t is computed by the
# scorer; these functions only reduce a list of per-token values.

BOTTOM_FRACTION = 0.1  # DeepConf's "bottom-10%" group confidence


def window_means(values: Sequence[float], window: int | None) -> list[float]:
    """The group confidences: the mean of every full sliding window of ``window`` values (stride 1).
    Fewer values than ``window`` (or no window): their one mean, as DeepConf's compute_least_grouped;
    no values: []."""
    if not values:
        return []
    if window is None or len(values) <= window:
        return [sum(values) / len(values)]
    s = sum(values[:window])
    out = [s / window]
    for i in range(window, len(values)):
        s += values[i] - values[i - window]
        out.append(s / window)
    return out


def lowest_window_mean(values: Sequence[float], window: int | None) -> float:
    """DeepConf's lowest group confidence (min of :func:`window_means`); 0.0 for no values."""
    return min(window_means(values, window), default=0.0)


def bottom_window_mean(values: Sequence[float], window: int | None, fraction: float = BOTTOM_FRACTION) -> float:
    """DeepConf's bottom-10% group confidence: the mean of the lowest ``max(1, int(#windows * fraction))``
    group confidences; 0.0 for no values."""
    means = sorted(window_means(values, window))
    if not means:
        return 0.0
    n = max(1, int(len(means) * fraction))
    return sum(means[:n]) / n


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation, as ``numpy.percentile``'s default."""
    if not values:
        raise ValueError("percentile of no values")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def online_threshold(warmup_lowest: Sequence[float], q: float) -> float:
    """DeepConf online's bar: the ``q``-th percentile of the warmup paths' lowest group confidences
    (q=90 is DeepConf-low, which keeps about the top 10%; q=10 DeepConf-high)."""
    return percentile(warmup_lowest, q)


def online_stop_at(confs: Sequence[float], window: int, threshold: float, start: int = 0) -> int | None:
    """The first token count ``t > start`` (with ``t >= window``: a full window) at which the running
    window confidence ``mean(confs[t-window:t])`` falls below ``threshold``; None if it never does.
    A path stops there and does not vote."""
    for t in range(max(start + 1, window), len(confs) + 1):
        if sum(confs[t - window : t]) / window < threshold:
            return t
    return None


def online_votes(lowest: float, threshold: float) -> bool:
    """Whether a path votes in online mode: its lowest group confidence reached the bar (DeepConf drops
    warmup paths below it, and every path that was stopped)."""
    return lowest >= threshold
