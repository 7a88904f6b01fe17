"""Seeded synthetic calibration records with the structure real runs show, for tests and demos.

Per problem: a difficulty (so some problems are hopeless, some trivial, and majority vote can lock onto
a popular wrong answer), answers drawn from a few distractors, wrong paths longer than right ones, and
per scorer a signal whose strength grows with the prefix length (a path-level latent makes a path's
scores at successive prefixes correlate). Presets mimic the paper's 1.5B-on-AIME regime and the tiny
testbed model. Nothing here is a measurement.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel

from sglang_stop.advisor.calibration import CalibPath, CalibRecord
from sglang_stop.config import ModelSpec, SamplingConfig
from sglang_stop.io import atomic_write_text


class Preset(BaseModel):
    n_max: int
    prefix_lens: list[int]
    max_new_tokens: int
    mean_len: float
    #: scorer -> signal strength (logit units at the full length); entropy-like scorers are negative-valued.
    scorers: dict[str, float]
    base_logit: float = -0.6
    spread: float = 2.2


PRESETS: dict[str, Preset] = {  # the paper's scale and the testbed's
    "paper": Preset(n_max=64, prefix_lens=[512, 1024, 2048, 4096], max_new_tokens=16384, mean_len=8650,
                    scorers={"stop": 1.2, "confidence": 0.6, "entropy": 0.4}),
    "testbed": Preset(n_max=16, prefix_lens=[32, 64, 96, 128], max_new_tokens=192, mean_len=120,
                      scorers={"stop": 1.0, "confidence": 0.5, "entropy": 0.3}),
}


def synthetic_records(n_problems: int = 30, *, preset: str = "paper", seed: int = 0, n_max: int | None = None) -> list[CalibRecord]:
    cfg = PRESETS[preset]
    m = n_max or cfg.n_max
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_problems):
        p_right = 1 / (1 + np.exp(-(cfg.base_logit + cfg.spread * rng.normal())))
        n_wrong = int(rng.integers(2, 9))
        wrong_w = 1.0 / np.arange(1, n_wrong + 1) ** rng.uniform(0.5, 2.0)  # Zipf-like distractors
        wrong_w /= wrong_w.sum()
        prob_len = cfg.mean_len * np.exp(rng.normal(0, 0.3))
        correct = rng.random(m) < p_right
        lengths = np.where(correct, 0.85, 1.15) * prob_len * np.exp(rng.normal(0, 0.35, m))
        lengths = np.clip(lengths.astype(int), 8, cfg.max_new_tokens)
        truncated = lengths >= cfg.max_new_tokens
        correct &= ~truncated
        latent = rng.normal(0, 0.6, m)  # path-level quality noise shared across prefixes
        offset = rng.normal(0, 0.5)  # problem-level score shift (scores are not calibrated across problems)
        paths = []
        for j in range(m):
            if truncated[j] or rng.random() < 0.03:
                answer = None
            elif correct[j]:
                answer = "17"
            else:
                answer = str(100 + int(rng.choice(n_wrong, p=wrong_w)))
            scores: dict[str, dict[int, float]] = {}
            sign = 1.0 if correct[j] else -1.0
            for name, strength in cfg.scorers.items():
                per = {}
                for L in (L for L in cfg.prefix_lens if L < lengths[j]):  # finished paths are never scored
                    frac = min(L, lengths[j]) / lengths[j]
                    z = strength * np.sqrt(frac) * sign + latent[j] + offset + rng.normal(0, 0.8)
                    val = 1 / (1 + np.exp(-z))
                    per[L] = round(float(-(1 - val) if name == "entropy" else val), 5)
                scores[name] = per
            paths.append(CalibPath(answer=answer, correct=bool(correct[j]) and answer is not None, length=int(lengths[j]), scores=scores))
        out.append(
            CalibRecord(
                problem_id=f"synthetic-{i:04d}",
                task=f"synthetic-{preset}",
                model_id=f"synthetic:{preset}",
                model=ModelSpec(),
                n_max=m,
                prefix_lens=cfg.prefix_lens,
                scorers=list(cfg.scorers),
                sampling=SamplingConfig(temperature=0.6, top_p=0.95, top_k=40, max_new_tokens=cfg.max_new_tokens),
                seed=seed,
                reference="17",
                paths=paths,
            )
        )
    return out


def write_synthetic(path: str | Path, n_problems: int = 30, *, preset: str = "paper", seed: int = 0) -> int:
    recs = synthetic_records(n_problems, preset=preset, seed=seed)
    atomic_write_text(path, "".join(r.model_dump_json() + "\n" for r in recs))
    return len(recs)
