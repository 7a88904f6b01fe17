"""Voting over the final answers of the surviving paths.

A path with no answer (None) abstains. Ties go to the answer that reached the winning total first
when the paths are read in order (for plain counts: the one whose last vote came earliest), so a
result never depends on dict or thread ordering and replays of recorded runs give the same winner.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

_REL_TOL = 1e-9  # weighted totals this close count as a tie (float sums depend on order)


def _check(answers: Sequence[str | None], weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * len(answers)
    if len(weights) != len(answers):
        raise ValueError(f"weights: {len(weights)} given for {len(answers)} answers")
    ws = [float(w) for w in weights]
    for i, w in enumerate(ws):
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"weights[{i}]: {w} (must be finite and >= 0)")
    return ws


def vote_counts(answers: Sequence[str | None], weights: Sequence[float] | None = None) -> dict[str, float]:
    """Votes (or summed weights) per answer, in order of first appearance; abstentions left out."""
    ws = _check(answers, weights)
    out: dict[str, float] = {}
    for a, w in zip(answers, ws):
        if a is not None:
            out[a] = out.get(a, 0.0) + w
    return out


def majority_vote(answers: Sequence[str | None], weights: Sequence[float] | None = None) -> str | None:
    """The answer with the most votes (summed weights when given); None when every path abstains.

    Tie-break: among answers tied at the top total, the first path (in list order) at which an
    answer's running total reaches the top total decides.
    """
    ws = _check(answers, weights)
    totals = vote_counts(answers, ws)
    if not totals:
        return None
    top = max(totals.values())
    tol = _REL_TOL * max(abs(top), 1.0)
    tied = {a for a, t in totals.items() if t >= top - tol}
    if len(tied) == 1:
        return next(iter(tied))
    running: dict[str, float] = {}
    for a, w in zip(answers, ws):
        if a in tied:
            running[a] = running.get(a, 0.0) + w
            if running[a] >= top - tol:
                return a
    raise AssertionError("unreachable: some tied answer reaches the top total")
