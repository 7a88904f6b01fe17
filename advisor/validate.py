"""Held-out regret: recommend on one half of the problems (Optuna), judge on the other half.

Two references, both measured on the held-out half:
  * ``regret_points``: vs the held-out oracle, the grid's best *chosen on the held-out half itself*
    (it profits from that half's sampling noise, so this is a pessimistic figure);
  * ``regret_vs_grid_points``: vs the exhaustive grid's choice on the *training* half, i.e. what an
    exhaustive search with the same information would have recommended (the search's own loss).
"""

from __future__ import annotations

import time

import numpy as np
from pydantic import BaseModel

from sglang_stop.advisor.calibration import CalibrationSet
from sglang_stop.advisor.replay import Replayer
from sglang_stop.advisor.search import best_under_budget, check_budget, default_space, exhaustive, run_study, select


class RegretRow(BaseModel):
    split: int
    budget: float
    selection: str = "best"
    recommended: str
    search_seconds: float
    train_accuracy: float
    test_accuracy: float
    test_tokens: float
    oracle: str
    oracle_accuracy: float
    regret_points: float
    grid_choice: str
    grid_choice_test_accuracy: float
    regret_vs_grid_points: float


def holdout_regret(calib: CalibrationSet, budgets: list[float], *, holdout: float = 0.5, seed: int = 0,
                   trials: int = 200, draws: int = 128, max_stages: int = 1, splits: int = 1,
                   selections: tuple[str, ...] = ("best",)) -> list[RegretRow]:
    """One row per (split, budget, selection rule); splits are seeded random halves of the problems."""
    rows = []
    for k in range(splits):
        rows += _one_split(calib, budgets, holdout=holdout, seed=seed + k, trials=trials, draws=draws,
                           max_stages=max_stages, split=k, selections=selections)
    return rows


def _one_split(calib: CalibrationSet, budgets: list[float], *, holdout: float, seed: int, trials: int, draws: int,
               max_stages: int, split: int, selections: tuple[str, ...]) -> list[RegretRow]:
    perm = np.random.default_rng(seed).permutation(calib.n_problems)
    n_test = max(1, int(round(holdout * calib.n_problems)))
    test, train = calib.subset(perm[:n_test]), calib.subset(perm[n_test:])
    space = default_space(calib, max_stages=max_stages)
    rep_test = Replayer(test, draws=draws, seed=seed)
    grid_test = exhaustive(rep_test, space)
    grid_train = exhaustive(Replayer(train, draws=draws, seed=seed), space)
    rows = []
    for budget in budgets:
        rep_train = Replayer(train, draws=draws, seed=seed)
        check_budget(rep_train, space, budget)
        t0 = time.perf_counter()
        _, results = run_study(rep_train, space, budget=budget, n_trials=trials, seed=seed)
        elapsed = time.perf_counter() - t0
        oracle = best_under_budget(grid_test, budget)
        assert oracle is not None
        for rule in selections:
            rec = select(results, budget, rule=rule, replayer=rep_train, space=space)
            chosen = select(grid_train, budget, rule=rule, replayer=rep_train, space=space)
            assert rec is not None and chosen is not None
            on_test = rep_test.evaluate(rec.config)
            chosen_test = rep_test.evaluate(chosen.config)
            rows.append(RegretRow(
                split=split, budget=budget, selection=rule, recommended=rec.config.label(),
                search_seconds=round(elapsed, 2), train_accuracy=rec.accuracy, test_accuracy=on_test.accuracy,
                test_tokens=on_test.tokens, oracle=oracle.config.label(), oracle_accuracy=oracle.accuracy,
                regret_points=100 * (oracle.accuracy - on_test.accuracy),
                grid_choice=chosen.config.label(), grid_choice_test_accuracy=chosen_test.accuracy,
                regret_vs_grid_points=100 * (chosen_test.accuracy - on_test.accuracy),
            ))
    return rows
