"""advisor.noise: paired comparisons of a recommendation with random pruning and with not pruning."""

from __future__ import annotations

import pytest

from sglang_stop.advisor.calibration import CalibPath, CalibRecord, from_records
from sglang_stop.advisor.noise import noise_notes, noise_report, paired_diff
from sglang_stop.advisor.replay import Replayer, ReplayConfig, Stage
from sglang_stop.config import SamplingConfig


def _set(problems: int, *, informative: bool) -> Replayer:
    """8 paths per problem, 2 right ("A"), 6 wrong ("B"); the scorer ranks the right
    ones first (informative) or says nothing (every score equal)."""
    recs = []
    for i in range(problems):
        paths = [CalibPath(answer="A" if j < 2 else "B", correct=j < 2, length=40,
                           scores={"s": {10: (1.0 if j < 2 else 0.0) if informative else 0.5}}) for j in range(8)]
        recs.append(CalibRecord(problem_id=f"p{i}", task="t", model_id="m", n_max=8, prefix_lens=[10], scorers=["s"],
                                sampling=SamplingConfig(max_new_tokens=100), paths=paths))
    return Replayer(from_records(recs), draws=32, bootstrap=20)


def _pruned(scorer: str) -> ReplayConfig:
    return ReplayConfig(n=8, stages=(Stage(prefix_len=10, keep=2),), scorer=scorer)


def test_an_informative_scorer_beats_random_and_unpruned_beyond_noise():
    rep = _set(30, informative=True)
    choice = rep.evaluate(_pruned("s"))
    assert choice.accuracy == 1.0
    comps = noise_report(rep, choice, [choice], budget=None, n_values=[1, 2, 4, 8])
    assert [(c.baseline, c.verdict) for c in comps] == [("random pruning", "better"), ("unpruned", "better")]
    assert noise_notes(choice, comps) == []


def test_an_uninformative_scorer_is_reported_within_noise_of_random():
    rep = _set(30, informative=False)
    choice = rep.evaluate(_pruned("s"))
    diff, se = paired_diff(rep, choice.config, _pruned("random"))
    assert abs(diff) < 1.96 * se
    comps = noise_report(rep, choice, [choice], budget=None, n_values=[1, 2, 4, 8])
    assert comps[0].baseline == "random pruning" and comps[0].within_noise
    assert "scorer s does not beat random pruning beyond noise" in noise_notes(choice, comps)


def test_a_random_choice_is_compared_with_the_best_recorded_scorer():
    rep = _set(30, informative=True)
    rnd, best = rep.evaluate(_pruned("random")), rep.evaluate(_pruned("s"))
    comps = noise_report(rep, rnd, [rnd, best], budget=None, n_values=[8])
    assert comps[0].baseline == "best recorded scorer" and comps[0].verdict == "worse"
    assert comps[0].diff_points == pytest.approx(100 * (rnd.accuracy - best.accuracy))
    assert any("the choice prunes at random" in n for n in noise_notes(rnd, comps))
    unpruned = rep.evaluate(ReplayConfig(n=8))
    comps = noise_report(rep, unpruned, [unpruned, best], budget=None, n_values=[8])
    assert comps[0].baseline == "best pruned" and comps[0].verdict == "worse"
