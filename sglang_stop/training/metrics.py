"""Scorer quality figures. Judge scorers WITHIN problems: pooled AUC mostly measures problem difficulty."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
import random


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """ROC AUC (Mann-Whitney, ties count half); nan if one class is missing."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return math.nan
    order = sorted(scores)
    # rank with ties averaged
    ranks: dict[float, float] = {}
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and order[j] == order[i]:
            j += 1
        ranks[order[i]] = (i + j + 1) / 2
        i = j
    r = sum(ranks[s] for s in pos)
    return (r - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def within_problem_auc(groups: Sequence[str], scores: Sequence[float], labels: Sequence[bool]) -> tuple[float, int]:
    """Mean AUC over problems having both good and bad items, and how many such problems."""
    by: dict[str, tuple[list[float], list[bool]]] = defaultdict(lambda: ([], []))
    for g, s, y in zip(groups, scores, labels):
        by[g][0].append(s)
        by[g][1].append(y)
    vals = [auc(s, y) for s, y in by.values() if any(y) and not all(y)]
    return (sum(vals) / len(vals) if vals else math.nan), len(vals)


def kept_accuracy(groups: Sequence[str], scores: Sequence[float], s_mc: Sequence[float], keep: float = 0.25) -> float:
    """Pruning accuracy: mean s_mc of the top ``keep`` fraction of each problem's prefixes (ties by order)."""
    by: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for g, s, m in zip(groups, scores, s_mc):
        by[g].append((s, m))
    vals = []
    for items in by.values():
        n = max(1, math.ceil(len(items) * keep))
        top = sorted(items, key=lambda t: -t[0])[:n]
        vals.append(sum(m for _, m in top) / n)
    return sum(vals) / len(vals) if vals else math.nan


def vote_accuracy(
    groups: Sequence[str],
    scores: Sequence[float] | None,
    answers: Sequence[Sequence[str | None]],
    truth: dict[str, str],
    keep: int,
    rng: random.Random | None = None,
    random_draws: int = 20,
) -> float:
    """Majority vote over the top-``keep`` prefixes (one continuation each, averaged over continuation j).

    ``scores=None`` keeps a random subset (``random_draws`` draws averaged): the floor to beat.
    """
    by: dict[str, list[int]] = defaultdict(list)
    for idx, g in enumerate(groups):
        by[g].append(idx)
    rng = rng or random.Random(0)
    accs = []
    for g, idxs in by.items():
        k_conts = min(len(answers[i]) for i in idxs)
        for j in range(k_conts):
            if scores is None:
                subsets = [rng.sample(idxs, min(keep, len(idxs))) for _ in range(random_draws)]
            else:
                subsets = [sorted(idxs, key=lambda i: -scores[i])[:keep]]
            for sub in subsets:
                votes = Counter(answers[i][j] for i in sub if answers[i][j] is not None)
                top = votes.most_common(1)[0][0] if votes else None
                accs.append((top == truth[g]) / len(subsets))
            # each (problem, j) contributes one unit in total
    n_units = sum(min(len(answers[i]) for i in idxs) for idxs in by.values())
    return sum(accs) / n_units if n_units else math.nan
