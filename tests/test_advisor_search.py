from __future__ import annotations

import pytest

from sglang_stop.advisor.calibration import from_records
from sglang_stop.advisor.replay import Replayer
from sglang_stop.advisor.search import (
    best_under_budget,
    check_budget,
    default_space,
    exhaustive,
    grid,
    make_config,
    pareto_front,
    run_study,
)
from sglang_stop.advisor.synthetic import synthetic_records
from sglang_stop.errors import UserError


@pytest.fixture(scope="module")
def calib():
    return from_records(synthetic_records(12, preset="testbed", seed=5))


def test_space_and_grid(calib):
    sp = default_space(calib)
    assert sp.n_values == [1, 2, 4, 8, 16]
    assert sp.scorers[:2] == ["none", "random"]
    g = grid(sp)
    assert len(g) == len(set(g))
    assert all(c == c.canonical() for c in g)
    assert make_config(16, "stop", "majority", [(64, 0.25)]).stages[0].keep == 4
    assert make_config(3, "stop", "majority", [(64, 0.5)]).stages[0].keep == 2  # ceil, like the runtime
    assert len(grid(default_space(calib, max_stages=2))) > len(g)


def test_budget_below_cheapest_names_minimum(calib):
    rep = Replayer(calib, draws=16, bootstrap=50)
    sp = default_space(calib)
    low = check_budget(rep, sp, 10_000)
    with pytest.raises(UserError, match=rf"below the cheapest config: minimum is {int(low.tokens) + 1} tokens per problem"):
        check_budget(rep, sp, low.tokens / 2)


def test_search_reproducible_and_near_grid(calib):
    sp = default_space(calib)
    budget = 600.0
    runs = []
    for _ in range(2):
        rep = Replayer(calib, draws=16, bootstrap=50, seed=0)
        study, res = run_study(rep, sp, budget=budget, n_trials=40, seed=7)
        runs.append(([t.params for t in study.trials], best_under_budget(res, budget)))
    assert runs[0][0] == runs[1][0]
    assert runs[0][1] == runs[1][1]
    best = exhaustive(Replayer(calib, draws=16, bootstrap=50, seed=0), sp)
    oracle = best_under_budget(best, budget)
    assert runs[0][1].tokens <= budget
    assert oracle.accuracy - runs[0][1].accuracy <= 0.02


def test_sqlite_storage_resumes(calib, tmp_path):
    db = tmp_path / "s.db"
    sp = default_space(calib)
    rep = Replayer(calib, draws=16, bootstrap=20)
    s1, _ = run_study(rep, sp, budget=600, n_trials=6, seed=1, storage=str(db), study_name="x", polish_rounds=0)
    assert len(s1.trials) == 6
    s2, _ = run_study(rep, sp, budget=600, n_trials=10, seed=1, storage=str(db), study_name="x", polish_rounds=0)
    assert len(s2.trials) == 10  # 4 more, not 10
    s3, _ = run_study(rep, sp, budget=600, n_trials=10, seed=1, storage=f"sqlite:///{db}", study_name="x", polish_rounds=0)
    assert len(s3.trials) == 10


def test_multi_objective_front(calib):
    rep = Replayer(calib, draws=16, bootstrap=20)
    study, res = run_study(rep, default_space(calib), budget=None, n_trials=40, seed=0, multi_objective=True)
    assert len(study.directions) == 2
    front = pareto_front(res)
    assert [r.tokens for r in front] == sorted(r.tokens for r in front)
    assert all(b.accuracy > a.accuracy for a, b in zip(front, front[1:]))


def test_objective_tokens_is_cheaper_within_tolerance(calib):
    res = exhaustive(Replayer(calib, draws=16, bootstrap=20), default_space(calib))
    acc = best_under_budget(res, 1000)
    tok = best_under_budget(res, 1000, "tokens", tolerance=0.02)
    assert tok.tokens <= acc.tokens and tok.accuracy >= acc.accuracy - 0.02


def test_holdout_regret_rows(calib):
    from sglang_stop.advisor.validate import holdout_regret

    rows = holdout_regret(calib, [800.0], trials=10, draws=8)
    (r,) = rows
    assert r.oracle_accuracy >= r.test_accuracy - 1e-9  # the held-out oracle is the best on that half
    assert abs(r.regret_vs_grid_points - 100 * (r.grid_choice_test_accuracy - r.test_accuracy)) < 1e-9


def test_robust_selection_prefers_a_good_neighbourhood(calib):
    from sglang_stop.advisor.search import config_neighbours, select

    rep = Replayer(calib, draws=16, bootstrap=50)
    sp = default_space(calib)
    cfg = make_config(8, "stop", "majority", [(64, 0.5)])
    near = config_neighbours(cfg, sp)
    assert make_config(4, "stop", "majority", [(64, 0.5)]) in near and make_config(16, "stop", "majority", [(64, 0.5)]) in near
    assert make_config(8, "stop", "majority", [(32, 0.5)]) in near and make_config(8, "stop", "majority", [(64, 0.25)]) in near
    assert cfg not in near and all(c.scorer == "stop" for c in near)
    results = exhaustive(rep, sp)
    budget = 900.0
    best = select(results, budget, rule="best")
    robust = select(results, budget, rule="robust", replayer=rep, space=sp)
    assert best is not None and robust is not None and robust.tokens <= budget
    margin = (best.ci_high - best.ci_low) / 3.92
    assert robust.accuracy >= best.accuracy - margin - 1e-12

    def smooth(r):
        accs = [r.accuracy] + [rep.evaluate(c).accuracy for c in config_neighbours(r.config, sp)]
        return sum(accs) / len(accs)

    assert smooth(robust) >= smooth(best) - 1e-12
    with pytest.raises(UserError, match="--selection"):
        select(results, budget, rule="nope", replayer=rep, space=sp)
