"""The paper's deployment guideline (Eq. 7): 1/gamma = a * C^b * Lp^c * Lt^-d.

C is the budget (total generated tokens per problem, all paths), Lp the prefix length, Lt the task
length (mean full path length); all three in units of 1024 tokens. gamma is the keep ratio. The fit
is least squares in log space (the model is linear there), with standard errors from the covariance.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sglang_stop.errors import UserError
from sglang_stop.io import atomic_write_text, read_model_json

UNIT = 1024
PARAMS = ("a", "b", "c", "d")


class GuidelineConstants(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: float = Field(1.17e4, gt=0)
    b: float = 0.46
    c: float = 0.40
    d: float = 4.55
    stderr: dict[str, float] = Field(default_factory=dict, description="standard error per fitted constant")
    fixed: list[str] = Field(default_factory=list, description="constants held at their defaults (not identifiable)")
    n_points: int = 0
    residual_std: float | None = Field(None, description="std of log(1/gamma) residuals")
    source: str = "paper (1.5B on AIME24 and GPQA-D)"


PAPER = GuidelineConstants()


class GuidelinePoint(BaseModel):
    """One observed optimum: at budget C (tokens), prefix Lp, task length Lt, the best keep ratio."""

    budget: float = Field(..., gt=0)
    prefix_len: float = Field(..., gt=0)
    task_len: float = Field(..., gt=0)
    inverse_ratio: float = Field(..., gt=0)


def inverse_ratio(budget: float, prefix_len: float, task_len: float, k: GuidelineConstants = PAPER) -> float:
    """1/gamma for a budget, prefix length and task length given in tokens."""
    for name, v in (("budget", budget), ("prefix-len", prefix_len), ("task-len", task_len)):
        if not v > 0:
            raise UserError(f"--{name}: must be > 0 tokens, got {v}")
    C, Lp, Lt = budget / UNIT, prefix_len / UNIT, task_len / UNIT
    return k.a * C**k.b * Lp**k.c * Lt ** (-k.d)


def _log_model(X: np.ndarray, log_a: float, b: float, c: float, d: float) -> np.ndarray:
    logC, logLp, logLt = X
    return log_a + b * logC + c * logLp - d * logLt


def fit(points: list[GuidelinePoint], prior: GuidelineConstants = PAPER, source: str = "fit") -> GuidelineConstants:
    """Fit the constants; those whose variable never varies (e.g. one task => one Lt) stay at ``prior``."""
    from scipy.optimize import curve_fit

    if len(points) < 2:
        raise UserError(f"guideline fit needs at least 2 points, got {len(points)}")
    X = np.log([[p.budget / UNIT, p.prefix_len / UNIT, p.task_len / UNIT] for p in points]).T
    y = np.log([p.inverse_ratio for p in points])
    free = ["a"] + [n for n, row in zip(("b", "c", "d"), X) if np.ptp(row) > 1e-9]
    fixed = [n for n in PARAMS if n not in free]
    if len(points) <= len(free):
        raise UserError(f"guideline fit: {len(points)} points for {len(free)} free constants ({', '.join(free)})")
    full0 = {"a": math.log(prior.a), "b": prior.b, "c": prior.c, "d": prior.d}

    def model(X: np.ndarray, *theta: float) -> np.ndarray:
        vals = dict(full0)
        vals.update(zip(free, theta))
        return _log_model(X, vals["a"], vals["b"], vals["c"], vals["d"])

    theta, pcov = curve_fit(model, X, y, p0=[full0[n] for n in free])
    se = np.sqrt(np.clip(np.diag(pcov), 0, None))
    vals = dict(full0)
    vals.update(zip(free, theta))
    stderr = {n: float(s) for n, s in zip(free, se)}
    if "a" in stderr:  # delta method: se(a) = a * se(log a)
        stderr["a"] = float(math.exp(vals["a"]) * stderr["a"])
    resid = y - model(X, *theta)
    return GuidelineConstants(
        a=float(math.exp(vals["a"])),
        b=float(vals["b"]),
        c=float(vals["c"]),
        d=float(vals["d"]),
        stderr=stderr,
        fixed=fixed,
        n_points=len(points),
        residual_std=float(resid.std(ddof=len(free))) if len(points) > len(free) else None,
        source=source,
    )


def load_constants(spec: str | Path) -> GuidelineConstants:
    """``paper`` or a JSON file written by ``stop-advise fit``."""
    if str(spec) == "paper":
        return PAPER
    return read_model_json(spec, GuidelineConstants,
                           missing="constants file not found (use 'paper' or a file from `stop-advise fit`)")


def save_constants(k: GuidelineConstants, path: str | Path) -> None:
    atomic_write_text(path, k.model_dump_json(indent=2) + "\n")
