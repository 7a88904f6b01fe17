"""Turn a replayed policy into the runtime's own config (``sglang_stop.config.RuntimeConfig``).

Sampling, model, task and prompt come from the calibration records, because the predictions only
hold for the setting the paths were sampled under.
"""

from __future__ import annotations

from typing import Any

from sglang_stop.advisor import __version__
from sglang_stop.advisor.calibration import CalibrationSet
from sglang_stop.advisor.replay import ReplayResult
from sglang_stop.config import (
    AggregationConfig,
    PruneStage,
    RuntimeConfig,
    ScorerSpec,
)


def to_runtime_config(res: ReplayResult, calib: CalibrationSet, *, budget: float | None, extra: dict[str, Any] | None = None) -> RuntimeConfig:
    rec = calib.records[0]
    cfg = res.config
    meta: dict[str, Any] = {
        "advisor_version": __version__,
        "predicted_accuracy": round(res.accuracy, 6),
        "ci_low": round(res.ci_low, 6),
        "ci_high": round(res.ci_high, 6),
        "predicted_tokens_per_problem": round(res.tokens, 1),
        "tokens_ci_low": round(res.tokens_ci_low, 1),
        "tokens_ci_high": round(res.tokens_ci_high, 1),
        "budget": budget,
        "calib": list(calib.sources),
        "calib_problems": calib.n_problems,
        "model_id": rec.model_id,
        "calib_model": calib.model_identity,  # `check` compares it with the run's model
        "interval": "95% bootstrap over problems and path draws (one run over this many problems)",
    }
    meta.update(extra or {})
    return RuntimeConfig(
        n=cfg.n,
        stages=[PruneStage(prefix_len=s.prefix_len, keep=s.keep) for s in cfg.stages],
        scorer=ScorerSpec(name=cfg.scorer, options=dict(rec.scorer_options.get(cfg.scorer, {}))),
        sampling=rec.sampling.model_copy(),
        aggregation=AggregationConfig(method=cfg.aggregation),
        model=rec.model.model_copy(),
        task=rec.task,
        prompt=rec.prompt,
        chat_template=rec.chat_template,
        seed=rec.seed or 0,
        metadata=meta,
    )
