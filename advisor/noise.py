"""Is a recommendation distinguishable from random pruning and from not pruning at all?

On small calibration sets the most accurate replayed policy is often a near-tie picked out of many
(winner's curse): `recommend` must not present noise as a choice. Each comparison is *paired*: the
replay uses the same path draws for every policy (common random numbers), so per problem we take
the mean over draws of (choice - baseline) accuracy, and the standard error of its mean over
problems. The verdict is ``better`` / ``worse`` when the difference exceeds ``Z`` paired standard
errors (significant at 95%, one comparison at a time), else ``within noise``; a choice that is not
``better`` than a baseline is reported as not beating it.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field, computed_field

from sglang_stop.advisor.replay import Replayer, ReplayConfig, ReplayResult

Z = 1.96

Role = Literal["random pruning", "unpruned", "best recorded scorer", "best pruned"]


class Comparison(BaseModel):
    """The choice against one baseline (accuracy in points, i.e. percent)."""

    baseline: Role
    config: str = Field(description="the baseline policy")
    accuracy: float = Field(description="the baseline's replayed accuracy (fraction)")
    tokens: float
    diff_points: float = Field(description="choice - baseline, accuracy points")
    se_points: float | None = Field(description="paired standard error of diff_points over problems (None: one problem)")
    verdict: Literal["better", "within noise", "worse"] = Field(description=f"|diff| beyond {Z} SE, and its sign")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def within_noise(self) -> bool:
        """The choice does not beat this baseline beyond noise."""
        return self.verdict != "better"

    def line(self) -> str:
        verdict = {"better": "better beyond noise", "within noise": "WITHIN NOISE", "worse": "WORSE beyond noise"}
        se = "?" if self.se_points is None else f"{self.se_points:.1f}"
        return f"vs {self.baseline} ({self.config}): {self.diff_points:+.1f} +- {se} points (paired SE): {verdict[self.verdict]}"


def paired_diff(rep: Replayer, a: ReplayConfig, b: ReplayConfig) -> tuple[float, float]:
    """(mean, standard error) of accuracy(a) - accuracy(b) in points, paired by problem and draw."""
    acc_a, _ = rep.per_draw(a)
    acc_b, _ = rep.per_draw(b)
    d = 100 * (acc_a - acc_b).mean(axis=1)
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.inf
    return float(d.mean()), se


def _compare(rep: Replayer, choice: ReplayResult, base: ReplayResult, role: Role) -> Comparison:
    diff, se = paired_diff(rep, choice.config, base.config)
    verdict = "within noise" if not abs(diff) > Z * se else ("better" if diff > 0 else "worse")
    return Comparison(baseline=role, config=base.config.label(), accuracy=base.accuracy, tokens=base.tokens,
                      diff_points=diff, se_points=se if math.isfinite(se) else None, verdict=verdict)


def _best(results: list[ReplayResult], budget: float | None, keep: object) -> ReplayResult | None:
    ok = [r for r in results if (budget is None or r.tokens <= budget) and keep(r)]  # type: ignore[operator]
    return max(ok, key=lambda r: (r.accuracy, -r.tokens), default=None)


def noise_report(rep: Replayer, choice: ReplayResult, results: list[ReplayResult], budget: float | None,
                 n_values: list[int]) -> list[Comparison]:
    """The choice against random pruning and against not pruning, within the same budget.

    A recorded scorer is compared with random pruning at the same N and stages; a random choice with
    the best recorded scorer found within budget. A pruned choice is compared with the best unpruned
    policy within budget (every N is replayed for it); an unpruned choice with the best pruned one."""
    cfg = choice.config
    unpruned = rep.evaluate_many(ReplayConfig(n=n) for n in n_values)
    pool = [*results, *unpruned]
    out: list[Comparison] = []
    if cfg.scorer == "random":
        other = _best(pool, budget, lambda r: r.config.scorer not in ("none", "random"))
        if other is not None:
            out.append(_compare(rep, choice, other, "best recorded scorer"))
    elif cfg.scorer != "none":
        rnd = rep.evaluate(cfg.model_copy(update={"scorer": "random"}))
        out.append(_compare(rep, choice, rnd, "random pruning"))
    if cfg.stages:
        other = _best(pool, budget, lambda r: not r.config.stages)
        if other is not None:
            out.append(_compare(rep, choice, other, "unpruned"))
    else:
        other = _best(pool, budget, lambda r: bool(r.config.stages))
        if other is not None:
            out.append(_compare(rep, choice, other, "best pruned"))
    return out


def noise_notes(choice: ReplayResult, comps: list[Comparison]) -> list[str]:
    """Plain sentences for what the choice does *not* show: a scorer no better than random, pruning
    no better than not pruning (empty when the choice beats both beyond noise)."""
    notes = []
    for c in comps:
        if c.baseline == "random pruning" and c.within_noise:
            notes.append(f"scorer {choice.config.scorer} does not beat random pruning beyond noise")
        elif c.baseline == "unpruned" and c.within_noise:
            notes.append("pruning does not beat the best unpruned policy within budget beyond noise")
        elif c.baseline in ("best recorded scorer", "best pruned"):
            what = {"best recorded scorer": ("the choice prunes at random", "scorer", "random pruning"),
                    "best pruned": ("the choice does not prune", "pruned policy", "not pruning")}[c.baseline]
            tail = {"within noise": f"no {what[1]} beats {what[2]} beyond noise",
                    "better": f"{what[2]} is better beyond noise",
                    "worse": f"that {what[1]} is better beyond noise (the selection rule preferred this one)"}
            notes.append(f"{what[0]}: the best {what[1]} within budget is {-c.diff_points:+.1f} points from it; "
                         + tail[c.verdict])
    return notes
