"""Held-out regret: recommend on one half of the problems, judge on the other half against the
exhaustive grid's best (which is itself fitted to that half, so the regret is a conservative figure)."""

from __future__ import annotations

import time

import numpy as np
from pydantic import BaseModel

from advisor.calibration import CalibrationSet
from advisor.replay import Replayer
from advisor.search import best_under_budget, check_budget, default_space, exhaustive, run_study


class RegretRow(BaseModel):
    split: int
    budget: float
    recommended: str
    search_seconds: float
    train_accuracy: float
    test_accuracy: float
    test_tokens: float
    oracle: str
    oracle_accuracy: float
    regret_points: float


def holdout_regret(calib: CalibrationSet, budgets: list[float], *, holdout: float = 0.5, seed: int = 0,
                   trials: int = 200, draws: int = 128, max_stages: int = 1, splits: int = 1) -> list[RegretRow]:
    """One row per (split, budget); splits are seeded random halves of the problems."""
    rows = []
    for k in range(splits):
        rows += _one_split(calib, budgets, holdout=holdout, seed=seed + k, trials=trials, draws=draws,
                           max_stages=max_stages, split=k)
    return rows


def _one_split(calib: CalibrationSet, budgets: list[float], *, holdout: float, seed: int, trials: int, draws: int,
               max_stages: int, split: int) -> list[RegretRow]:
    perm = np.random.default_rng(seed).permutation(calib.n_problems)
    n_test = max(1, int(round(holdout * calib.n_problems)))
    test, train = calib.subset(perm[:n_test]), calib.subset(perm[n_test:])
    space = default_space(calib, max_stages=max_stages)
    rep_test = Replayer(test, draws=draws, seed=seed)
    grid_test = exhaustive(rep_test, space)
    rows = []
    for budget in budgets:
        rep_train = Replayer(train, draws=draws, seed=seed)
        check_budget(rep_train, space, budget)
        t0 = time.perf_counter()
        _, results = run_study(rep_train, space, budget=budget, n_trials=trials, seed=seed)
        rec = best_under_budget(results, budget)
        elapsed = time.perf_counter() - t0
        assert rec is not None
        on_test = rep_test.evaluate(rec.config)
        oracle = best_under_budget(grid_test, budget)
        assert oracle is not None
        rows.append(RegretRow(
            split=split, budget=budget, recommended=rec.config.label(), search_seconds=round(elapsed, 2),
            train_accuracy=rec.accuracy, test_accuracy=on_test.accuracy, test_tokens=on_test.tokens,
            oracle=oracle.config.label(), oracle_accuracy=oracle.accuracy,
            regret_points=100 * (oracle.accuracy - on_test.accuracy),
        ))
    return rows
