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
