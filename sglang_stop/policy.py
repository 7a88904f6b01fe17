"""Which paths survive a prune point: the one ranking rule (pure; the program calls it, and the
advisor's replay must agree with it).

Higher score first; scores equal up to float noise are ties, broken by path index. Noise matters:
the same prefix scored in a different batch shape (continuous batching admits branches in
timing-dependent order) differs by ~1e-7, and identical paths are common, so an exact sort would
keep different paths from run to run and a resumed run would not reproduce an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence

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
