"""Check a recommendation against a real run: predicted vs measured, and the replay's exactness.

Two checks on the per-problem results of ``sglang-stop run --config rec.yaml --out run.jsonl``:

* prediction: the run's tokens per problem and accuracy against the config's
  ``metadata.predicted_*`` and 95% interval (meaningful on problems the calibration never saw);
* exactness (with the calibration set of the *same* problems and seed): a run samples exactly the
  first N recorded paths (per-path seeds), so replaying the policy on them with the runtime's own
  rules (rank ties by path index, ``aggregate.majority_vote`` and its tie-break) must give the
  same tokens and the same voted answer for every problem. Any mismatch is a bug in the replay or
  nondeterminism in the runtime.

Both only mean something if the run used the config: a results file starts with the header
``sglang-stop run --out`` writes (``RecordHeader(kind="run-results", settings={"config": ...,
"task": ...})``), and :func:`verify_results` refuses results made with another policy, sampling,
prompt, task or model, naming the first field that differs. A results file without a header (an
older version's) cannot be verified: refused, unless the caller accepts it unverified (a warning).
"""

from __future__ import annotations

from pathlib import Path

import json
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from sglang_stop.advisor.calibration import CalibRecord, load_calibration
from sglang_stop.aggregate import majority_vote
from sglang_stop.policy import kept_positions, vote_weights
from sglang_stop.config import RuntimeConfig
from sglang_stop.errors import UserError, validation_message
from sglang_stop.io import read_header, read_jsonl
from sglang_stop.runner import ProblemResult


class ReplayedProblem(BaseModel):
    answer: str | None
    correct: bool
    tokens: int
    kept: list[int] = Field(description="indices of the paths that voted")


def replay_first_paths(rec: CalibRecord, cfg: RuntimeConfig) -> ReplayedProblem:
    """The runtime's program (sglang_stop/program.py) on the first ``cfg.n`` recorded paths."""
    if cfg.n > len(rec.paths):
        raise UserError(f"n={cfg.n} exceeds the {len(rec.paths)} paths recorded for problem {rec.problem_id}")
    name = cfg.scorer.name
    if cfg.stages and name != "none" and name not in rec.scorers:
        raise UserError(f"scorer '{name}' has no recorded scores (recorded: {', '.join(rec.scorers)}); "
                        "only recorded scorers replay exactly")
    paths = rec.paths[: cfg.n]
    cap = [p.length for p in paths]
    alive = list(range(cfg.n))
    last: dict[int, float] = {}
    for stage in cfg.stages if name != "none" else []:
        L = stage.prefix_len
        if L not in rec.prefix_lens:
            raise UserError(f"stages: prefix_len {L} not recorded; have {rec.prefix_lens}")
        still = [i for i in alive if paths[i].length > L]
        if not still:
            break
        scores = {i: paths[i].scores[name][L] for i in still}
        last.update(scores)
        k = stage.kept(len(still))
        keep = {still[j] for j in kept_positions([scores[i] for i in still], still, k)}
        for i in still:
            if i not in keep:
                cap[i] = L
        alive = [i for i in alive if i not in set(still) - keep]
    weights = vote_weights(last, alive) if cfg.aggregation.method == "weighted" else None
    answer = majority_vote([paths[i].answer for i in alive], weights)
    correct = answer is not None and any(p.correct and p.answer == answer for p in rec.paths)
    return ReplayedProblem(answer=answer, correct=correct, tokens=sum(cap), kept=alive)


class ExactReport(BaseModel):
    problems: int
    token_mismatches: int
    answer_mismatches: int
    replayed_tokens_per_problem: float
    measured_tokens_per_problem: float
    replayed_accuracy: float
    measured_accuracy: float
    mismatched_ids: list[str] = Field(default_factory=list, description="first few problems that differ")


class PredictionReport(BaseModel):
    problems: int
    predicted_tokens_per_problem: float
    measured_tokens_per_problem: float
    tokens_rel_error: float = Field(description="(measured - predicted) / predicted")
    tokens_within_5pct: bool
    predicted_accuracy: float
    ci_low: float
    ci_high: float
    measured_accuracy: float
    accuracy_inside_interval: bool
    interval_problems: int | None = Field(
        None, description="problems the config's interval is for (the calibration's); the ci above is rescaled "
        "to this run's problem count by sqrt(interval_problems / problems)")


#: RuntimeConfig fields a run must share with the recommended config for its predictions to apply.
COMPARED = ("n", "stages", "scorer.name", "scorer.options", "aggregation", "consensus", "sampling", "prompt",
            "chat_template")


def _field(cfg: RuntimeConfig, dotted: str) -> Any:
    obj: Any = cfg.model_dump(mode="json")
    for part in dotted.split("."):
        obj = obj[part]
    return obj


def _show(v: Any) -> str:
    if isinstance(v, list) and all(isinstance(x, dict) and "prefix_len" in x for x in v):  # stages
        return "[" + " ".join(f"{x['prefix_len']}:{x['keep'] if x.get('keep') is not None else x['keep_ratio']}"
                              for x in v) + "]"
    return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))


def verify_results(path: str | Path, cfg: RuntimeConfig, config_path: str | Path, *,
                   allow_unverified: bool = False) -> tuple[RuntimeConfig | None, list[str]]:
    """The run's own config (from the results header) and any warnings; a UserError naming the first
    field where the run differs from ``cfg`` (the predictions would not apply)."""
    if not Path(path).is_file():
        raise UserError(f"{path}: file not found")
    head = read_header(path)
    if head is None:
        msg = (f"{path}: has no header record, so it cannot be verified to come from {config_path} (an older "
               "`sglang-stop run --out` file?)")
        if allow_unverified:
            return None, [msg + "; checked unverified (--unverified)"]
        raise UserError(msg + f"; rerun `sglang-stop run --config {config_path} --out FILE`, or pass --unverified")
    if head.kind != "run-results":
        raise UserError(f"{path}: holds {head.kind} records, not run results")
    raw = head.settings.get("config")
    if not isinstance(raw, dict):
        raise UserError(f"{path}:1: header.settings.config: missing (not a `sglang-stop run --out` file?)")
    try:
        run = RuntimeConfig.model_validate(raw)
    except ValidationError as e:
        raise UserError(validation_message(e, f"{path}:1", prefix="header.settings.config.")) from None
    for name in COMPARED:
        a, b = _field(run, name), _field(cfg, name)
        if a != b:
            raise UserError(f"{path}: results were made with {name}={_show(a)}, the config has {name}={_show(b)}; "
                            f"run `sglang-stop run --config {config_path}` to check its predictions")
    task = head.settings.get("task")
    if cfg.task is not None and task is not None and str(task) != cfg.task:
        raise UserError(f"{path}: results were made on task={task}, the config has task={cfg.task}")
    want = cfg.metadata.get("calib_model") or {}
    got = head.model or {}
    if want.get("weights_hash") and got.get("weights_hash") and want["weights_hash"] != got["weights_hash"]:
        raise UserError(f"{path}: results were made with model {_show(got)}, the calibration with {_show(want)}")
    return run, []


def load_results(path: str | Path) -> list[ProblemResult]:
    res = list(read_jsonl(path, ProblemResult))
    if not res:
        raise UserError(f"{path}: no results")
    return res


def check_prediction(cfg: RuntimeConfig, results: list[ProblemResult], where: str = "config") -> PredictionReport:
    meta = cfg.metadata
    need = ("predicted_tokens_per_problem", "predicted_accuracy", "ci_low", "ci_high")
    missing = [k for k in need if k not in meta]
    if missing:
        raise UserError(f"{where}: metadata.{missing[0]} missing (not a `stop-advise recommend` config?)")
    P = len(results)
    tok = sum(r.tokens for r in results) / P
    acc = sum(r.correct for r in results) / P
    pt = float(meta["predicted_tokens_per_problem"])
    rel = (tok - pt) / pt
    pa, lo, hi = float(meta["predicted_accuracy"]), float(meta["ci_low"]), float(meta["ci_high"])
    base = meta.get("calib_problems")
    if isinstance(base, int) and base > 0 and base != P:
        # the interval is that of one run over the calibration's problem count: its width scales as
        # 1/sqrt(problems), so a 4-problem run is not judged against a 400-problem interval
        f = (base / P) ** 0.5
        lo, hi = max(0.0, pa - (pa - lo) * f), min(1.0, pa + (hi - pa) * f)
    return PredictionReport(
        problems=P, predicted_tokens_per_problem=pt, measured_tokens_per_problem=tok, tokens_rel_error=rel,
        tokens_within_5pct=abs(rel) <= 0.05, predicted_accuracy=pa, ci_low=lo, ci_high=hi, measured_accuracy=acc,
        accuracy_inside_interval=lo <= acc <= hi, interval_problems=base if isinstance(base, int) else None,
    )


def check_exact(calib: str | Path | list[str | Path], cfg: RuntimeConfig, results: list[ProblemResult]) -> ExactReport:
    cs = load_calibration(calib if isinstance(calib, list) else [calib])
    by_id = {r.problem_id: r for r in cs.records}
    seeds = {r.seed for r in cs.records}
    if seeds != {cfg.seed}:
        raise UserError(f"seed: the run used {cfg.seed}, the calibration {sorted(seeds, key=str)}; "
                        "exactness needs the calibration's seed")
    tok_bad, ans_bad = 0, 0
    bad_ids: list[str] = []
    rt = mt = ra = ma = 0.0
    for r in results:
        rec = by_id.get(r.problem_id)
        if rec is None:
            raise UserError(f"problem {r.problem_id}: not in the calibration set (run the calibration's problems)")
        rep = replay_first_paths(rec, cfg)
        t_bad, a_bad = rep.tokens != r.tokens, rep.answer != r.predicted
        tok_bad += t_bad
        ans_bad += a_bad
        if (t_bad or a_bad) and len(bad_ids) < 10:
            bad_ids.append(r.problem_id)
        rt += rep.tokens
        mt += r.tokens
        ra += rep.correct
        ma += r.correct
    P = len(results)
    return ExactReport(problems=P, token_mismatches=tok_bad, answer_mismatches=ans_bad,
                       replayed_tokens_per_problem=rt / P, measured_tokens_per_problem=mt / P,
                       replayed_accuracy=ra / P, measured_accuracy=ma / P, mismatched_ids=bad_ids)
