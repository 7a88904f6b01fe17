from __future__ import annotations

import numpy as np
import pytest

from sglang_stop.advisor.calibration import CalibPath, CalibRecord, from_records
from sglang_stop.advisor.replay import Replayer, ReplayConfig, Stage
from sglang_stop.config import SamplingConfig
from sglang_stop.errors import UserError


def _rec(paths, pid="p", scorer="s") -> CalibRecord:
    return CalibRecord(
        problem_id=pid, task="t", model_id="m", n_max=len(paths), prefix_lens=[10, 20], scorers=[scorer],
        sampling=SamplingConfig(max_new_tokens=100),
        paths=[CalibPath(answer=a, correct=c, length=n, scores={scorer: {10: s1, 20: s2}}) for a, c, n, s1, s2 in paths],
    )


# answer, correct, length, score@10, score@20. p3 finished (8 tokens) before the first prune point.
PATHS = [("A", True, 50, 0.9, 0.9), ("B", False, 40, 0.1, 0.95), ("B", False, 60, 0.2, 0.1), ("A", True, 8, 0.0, 0.0)]


@pytest.fixture(scope="module")
def rep() -> Replayer:
    return Replayer(from_records([_rec(PATHS)]), draws=16, bootstrap=50)


def _cfg(stages=(), scorer="s", agg="majority", n=4) -> ReplayConfig:
    return ReplayConfig(n=n, stages=tuple(Stage(prefix_len=p, keep=k) for p, k in stages), scorer=scorer, aggregation=agg)


@pytest.mark.parametrize(
    "stages, agg, acc, tokens",
    [
        ((), "majority", 0.5, 158),  # A:2 B:2 tie -> expected value of a fair tie-break
        (((10, 1),), "majority", 1.0, 50 + 10 + 10 + 8),  # p3 finished early: not pruned, votes, real length
        (((20, 1),), "majority", 0.5, 20 + 40 + 20 + 8),  # keeps p1 (B); p3 (A) still votes -> tie
        (((20, 2),), "majority", 1.0, 50 + 40 + 20 + 8),  # voters A, B, A
        # weighted: p3 was never scored and weighs the mean last score (0.9 + 0.95 + 0.1) / 3
        (((20, 2),), "weighted", 1.0, 50 + 40 + 20 + 8),  # A: 0.9 + 0.65 > B: 0.95
        (((10, 3),), "majority", 0.5, 158),  # a no-op stage under majority vote
        (((10, 3),), "weighted", 1.0, 158),  # scores still weigh: A 0.9 + 0.4 > B 0.1 + 0.2
        (((10, 2), (20, 1)), "majority", 1.0, 50 + 10 + 20 + 8),  # two stages: p1 cut at 10, p2 at 20
    ],
)
def test_exact_accuracy_and_tokens(rep, stages, agg, acc, tokens):
    res = rep.evaluate(_cfg(stages, agg=agg))
    assert res.accuracy == pytest.approx(acc)
    assert res.tokens == pytest.approx(tokens)
    assert res.ci_low <= res.accuracy <= res.ci_high


def test_weighted_vote_refused_for_negative_scores_as_the_runtime_does():
    # sglang_stop.aggregate rejects negative weights (ValueError mid-run), so the replay refuses the
    # policy and the search space turns weighted into majority for such a scorer.
    from sglang_stop.advisor.search import default_space, grid
    from sglang_stop.aggregate import majority_vote

    with pytest.raises(ValueError, match="must be finite and >= 0"):
        majority_vote(["A", "B"], [-1.0, -1.0])
    neg = [("A", True, 50, -1.0, -1.0), ("B", False, 40, -1.0, -1.0), ("A", True, 60, -1.0, -1.0)]
    cs = from_records([_rec(neg)])
    r = Replayer(cs, draws=4, bootstrap=10)
    with pytest.raises(UserError, match="scorer 's' recorded negative scores"):
        r.evaluate(_cfg(((10, 2),), agg="weighted", n=3))
    assert r.evaluate(_cfg(((10, 3),), agg="majority", n=3)).accuracy == 1.0
    space = default_space(cs)
    assert cs.weight_scorers == ["random"]
    assert not [c for c in grid(space) if c.scorer == "s" and c.aggregation == "weighted"]
    assert [c for c in grid(space) if c.scorer == "random" and c.aggregation == "weighted"]


def test_finished_paths_need_no_scores():
    rec = _rec(PATHS).model_dump()
    rec["paths"][3]["scores"] = {}  # finished at 8 tokens: never scored by the runtime
    from sglang_stop.advisor.calibration import CalibRecord

    r = Replayer(from_records([CalibRecord.model_validate(rec)]), draws=4, bootstrap=10)
    assert r.evaluate(_cfg(((10, 1),))).tokens == 78


def test_subsampling_estimates_per_path_accuracy():
    paths = [("A", True, 30, 0.5, 0.5)] * 3 + [("B", False, 30, 0.5, 0.5)] * 5
    r = Replayer(from_records([_rec(paths)]), draws=4000, bootstrap=10)
    res = r.evaluate(_cfg(n=1, scorer="none"))
    assert res.accuracy == pytest.approx(3 / 8, abs=0.03) and res.tokens == 30


def test_no_answer_is_wrong_and_random_scorer_replays():
    paths = [(None, False, 30, 0.1, 0.1), (None, False, 30, 0.2, 0.2)]
    r = Replayer(from_records([_rec(paths)]), draws=8, bootstrap=10)
    assert r.evaluate(_cfg(n=2, scorer="none")).accuracy == 0
    res = r.evaluate(_cfg(((10, 1),), scorer="random", n=2))
    assert res.tokens == 40


def test_canonical_and_cache(rep):
    a = rep.evaluate(_cfg(((10, 4),)))  # keep == alive: a no-op stage
    b = rep.evaluate(_cfg((), scorer="none"))
    assert a is b and a.config.scorer == "none"


def test_errors_name_the_field(rep):
    from sglang_stop.errors import UserError

    with pytest.raises(UserError, match="exceeds the 4 paths"):
        rep.evaluate(_cfg(n=5))
    with pytest.raises(UserError, match="stages.0.prefix_len: 15 not recorded"):
        rep.evaluate(_cfg(((15, 1),)))
    with pytest.raises(UserError, match="scorer 'x' not recorded"):
        rep.evaluate(_cfg(((10, 1),), scorer="x"))


def test_batch_over_problems_matches_single():
    recs = [_rec(PATHS, pid="a"), _rec([(a, c, n, s2, s1) for a, c, n, s1, s2 in PATHS], pid="b")]
    both = Replayer(from_records(recs), draws=8, bootstrap=10).per_draw(_cfg(((20, 2),)))
    for i, r in enumerate(recs):
        one = Replayer(from_records([r]), draws=8, bootstrap=10).per_draw(_cfg(((20, 2),)))
        assert np.allclose(both[0][i], one[0][0]) and np.allclose(both[1][i], one[1][0])


def test_first_paths_replays_the_recorded_order_with_index_tie_break():
    paths = [("B", False, 50, 0.5, 0.5), ("A", True, 50, 0.5, 0.5), ("A", True, 50, 0.5, 0.5), ("B", False, 50, 0.9, 0.9)]
    r = Replayer(from_records([_rec(paths)]), first_paths=True, bootstrap=10)
    # first 3 paths, all tied at 0.5: the runtime keeps the lowest index (path 0, answer B)
    res = r.evaluate(_cfg(((10, 1),), n=3))
    assert res.accuracy == 0.0 and res.tokens == 50 + 10 + 10
    assert r.evaluate(_cfg((), scorer="none", n=3)).accuracy == 1.0  # A twice vs B once


def test_policy_notes_refuse_impossible_stages_and_name_dropped_ones():
    from sglang_stop.advisor.replay import policy_notes

    with pytest.raises(UserError, match=r"--stage 10:9: keeps 9 paths, but only 8 are alive with --n 8"):
        policy_notes(_cfg(((10, 9),), n=8))
    with pytest.raises(UserError, match=r"--stage 20:4: keeps 4 paths, but only 2 are alive after --stage 10:2"):
        policy_notes(_cfg(((10, 2), (20, 4)), n=8))
    with pytest.raises(UserError, match=r"--stage 10:2: prefix length must exceed the previous stage's \(--stage 20:4\)"):
        policy_notes(_cfg(((20, 4), (10, 2)), n=8))
    with pytest.raises(UserError, match="scorer 'none' ranks nothing"):
        policy_notes(_cfg(((10, 2),), scorer="none", n=8))
    assert policy_notes(_cfg(((10, 4), (20, 2)), n=8)) == []  # both stages prune: kept
    notes = policy_notes(_cfg(((10, 8),), n=8))
    assert any("--stage 10:8 keeps all 8 paths alive" in n and "dropped" in n for n in notes)
    assert any("--scorer s: no stage prunes, so the scorer is unused" in n for n in notes)
    assert policy_notes(_cfg(((10, 8),), n=8, agg="weighted")) == []  # scores still weigh the votes
    assert any("--aggregation weighted" in n for n in policy_notes(_cfg((), n=4, agg="weighted")))
