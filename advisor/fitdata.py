"""Guideline fit points from calibration data: at each budget and prefix length, the replayed best
keep ratio of single-stage pruning (the setting Eq. 7 was fitted on in the paper)."""

from __future__ import annotations

import numpy as np

from sglang_stop.advisor.calibration import CalibrationSet
from sglang_stop.advisor.guideline import GuidelinePoint
from sglang_stop.advisor.replay import Replayer
from sglang_stop.advisor.search import default_space, make_config
from sglang_stop.errors import UserError

FIT_RATIOS = [1 / 2, 1 / 3, 1 / 4, 1 / 6, 1 / 8, 1 / 12, 1 / 16, 1 / 24, 1 / 32, 1 / 48, 1 / 64]


def fit_points(calib: CalibrationSet, *, scorer: str | None = None, n_budgets: int = 8, draws: int = 64, seed: int = 0) -> list[GuidelinePoint]:
    scorer = scorer or ("stop" if "stop" in calib.scorers else (calib.scorers[0] if calib.scorers else None))
    if scorer is None or scorer not in calib.scorers:
        raise UserError(f"--scorer: '{scorer}' not recorded; have {', '.join(calib.scorers) or 'none'}")
    rep = Replayer(calib, draws=draws, bootstrap=10, seed=seed)
    space = default_space(calib)
    task_len = calib.task_len
    by_plen: dict[int, list] = {}
    for plen in calib.prefix_lens:
        cfgs = {make_config(n, scorer, "majority", [(plen, r)]) for n in space.n_values for r in FIT_RATIOS}
        by_plen[plen] = [r for r in rep.evaluate_many(cfgs) if r.config.stages]
    lo = min(r.tokens for rs in by_plen.values() for r in rs)
    hi = max(r.tokens for rs in by_plen.values() for r in rs)
    points = []
    for budget in np.geomspace(lo * 1.5, hi, n_budgets):
        for plen, rs in by_plen.items():
            ok = [r for r in rs if r.tokens <= budget]
            if not ok:
                continue
            best = max(ok, key=lambda r: (r.accuracy, -r.tokens))
            inv = best.config.n / best.config.stages[0].keep
            points.append(GuidelinePoint(budget=float(budget), prefix_len=plen, task_len=task_len, inverse_ratio=inv))
    return points
