"""Type I of the paper's taxonomy (external, non-learnable): a SlimSC-style diversity scorer.

SlimSC prunes reasoning chains that are too similar to others, so the compute left goes to paths that
may reach other answers; the STOP paper's Type I row uses Jaccard similarity. Here a path's text is a set
of word (or token) n-grams, and paths are ranked by greedy removal: the live path most similar to the
others still live (its max, or mean, Jaccard similarity to them) goes first, and so on. The score is the
removal step (the last survivor scores highest), so keeping the top k of any k keeps the set greedy
removal leaves: of two identical paths one is kept, the other pruned. ``greedy: false`` scores each
path once by 1 - its similarity to all the others (both copies of a duplicate then score low).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from sglang_stop.scorers.base import Branch, ScoreContext, Scorer, ScorerOptions


class DiversityOptions(ScorerOptions):
    n: int = Field(2, ge=1, description="n-gram length")
    unit: Literal["word", "token"] = Field("word", description="n-grams of whitespace words or of token ids")
    similarity: Literal["max", "mean"] = Field(
        "max", description="a path's similarity to the others: its highest or its mean Jaccard similarity"
    )
    greedy: bool = Field(True, description="rank by greedy removal of the most similar path (false: one pass)")


def ngrams(units: Sequence[object], n: int) -> frozenset[tuple[object, ...]]:
    """The set of ``n``-grams of ``units``; fewer than ``n`` units are one gram (empty: no grams)."""
    if len(units) < n:
        return frozenset([tuple(units)]) if units else frozenset()
    return frozenset(tuple(units[i : i + n]) for i in range(len(units) - n + 1))


def jaccard(a: frozenset[tuple[object, ...]], b: frozenset[tuple[object, ...]]) -> float:
    """|a & b| / |a | b|; two empty sets are the same text (1.0)."""
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def _reduce(sims: list[float], how: str) -> float:
    if not sims:
        return 0.0
    return max(sims) if how == "max" else sum(sims) / len(sims)


def diversity_scores(sets: Sequence[frozenset[tuple[object, ...]]], how: str, greedy: bool = True) -> list[float]:
    """Higher = less similar to the others (see the module docstring). Ties go to the lower index (kept)."""
    m = len(sets)
    sim = [[jaccard(sets[i], sets[j]) if i != j else 0.0 for j in range(m)] for i in range(m)]
    if not greedy:
        return [1.0 - _reduce([sim[i][j] for j in range(m) if j != i], how) for i in range(m)]
    live = list(range(m))
    scores = [0.0] * m
    for step in range(m):
        # the most similar live path; among equals the highest index goes first
        worst = max(live, key=lambda i: (_reduce([sim[i][j] for j in live if j != i], how), i))
        scores[worst] = float(step)
        live.remove(worst)
    return scores


class DiversityScorer(Scorer):
    """Keeps the paths least similar to the others (SlimSC-style; Type I)."""

    name = "diversity"
    Options = DiversityOptions
    nonnegative = True  # removal steps 0..N-1, or 1 - a similarity in [0, 1]

    def score(self, branches: Sequence[Branch], ctx: ScoreContext) -> list[float]:
        o: DiversityOptions = self.options  # type: ignore[assignment]
        units: list[Sequence[object]] = [b.text.split() if o.unit == "word" else b.generated_ids for b in branches]
        return diversity_scores([ngrams(u, o.n) for u in units], o.similarity, o.greedy)
