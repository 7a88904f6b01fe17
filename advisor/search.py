"""Search the pruning policy space on replayed calibration data: Optuna studies and an exhaustive grid.

The space is finite (categorical N, prune points, keep ratios, scorer, vote), so the exhaustive grid
is the ground truth the Optuna search is benchmarked against (regret). Budgets are expected generated
tokens per problem, summed over all N paths.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from typing import Any

import optuna
from pydantic import BaseModel, Field

from advisor.calibration import CalibrationSet
from advisor.replay import Replayer, ReplayConfig, ReplayResult, Stage, keep_count
from sglang_stop.errors import UserError

DEFAULT_KEEP_RATIOS = [0.5, 0.25, 0.125, 0.0625, 0.03125]


class SearchSpace(BaseModel):
    n_values: list[int] = Field(..., min_length=1)
    prefix_lens: list[int] = Field(..., min_length=1)
    keep_ratios: list[float] = Field(default_factory=lambda: list(DEFAULT_KEEP_RATIOS))
    scorers: list[str] = Field(..., min_length=1)
    aggregations: list[str] = Field(default_factory=lambda: ["majority", "weighted"])
    weight_scorers: list[str] | None = Field(
        None, description="scorers allowed with the weighted vote (non-negative scores); None = all")
    max_stages: int = Field(1, ge=1, le=3)

    def vote(self, scorer: str, aggregation: str) -> str:
        """``weighted`` falls back to majority for scorers whose scores cannot be vote weights."""
        if aggregation == "weighted" and self.weight_scorers is not None and scorer not in self.weight_scorers:
            return "majority"
        return aggregation


def default_space(calib: CalibrationSet, *, max_stages: int = 1, scorers: list[str] | None = None) -> SearchSpace:
    """N in powers of two up to the recorded paths, every recorded prune point and scorer."""
    n_values = sorted({2**i for i in range(int(math.log2(calib.n_max)) + 1)} | {calib.n_max})
    return SearchSpace(
        n_values=n_values,
        prefix_lens=list(calib.prefix_lens),
        scorers=scorers or calib.all_scorers,
        weight_scorers=calib.weight_scorers,
        max_stages=max_stages,
    )


def make_config(n: int, scorer: str, aggregation: str, stages: list[tuple[int, float]]) -> ReplayConfig:
    """Ratios -> keep counts (the runtime's ceil rule), applied to the paths alive at each stage."""
    alive, out = n, []
    for plen, ratio in sorted(stages):
        k = keep_count(alive, ratio)
        out.append(Stage(prefix_len=plen, keep=k))
        alive = k
    return ReplayConfig(n=n, stages=tuple(out), scorer=scorer, aggregation=aggregation).canonical()  # type: ignore[arg-type]


def grid(space: SearchSpace) -> list[ReplayConfig]:
    """Every distinct policy in the space (duplicates after canonicalisation removed)."""
    seen: dict[ReplayConfig, None] = {}
    for n, scorer, agg in itertools.product(space.n_values, space.scorers, space.aggregations):
        if scorer == "none":
            seen.setdefault(make_config(n, "none", "majority", []), None)
            continue
        for k in range(1, space.max_stages + 1):
            for plens in itertools.combinations(space.prefix_lens, k):
                for ratios in itertools.product(space.keep_ratios, repeat=k):
                    seen.setdefault(make_config(n, scorer, space.vote(scorer, agg), list(zip(plens, ratios))), None)
    return list(seen)


def best_under_budget(
    results: list[ReplayResult], budget: float | None, objective: str = "accuracy", tolerance: float = 0.01
) -> ReplayResult | None:
    """``accuracy``: most accurate within budget (ties -> fewer tokens). ``tokens``: the cheapest one
    within ``tolerance`` (fraction) of that accuracy."""
    ok = [r for r in results if budget is None or r.tokens <= budget]
    if not ok:
        return None
    top = max(ok, key=lambda r: (r.accuracy, -r.tokens, -len(r.config.stages)))
    if objective == "accuracy":
        return top
    if objective != "tokens":
        raise UserError(f"--objective: must be 'accuracy' or 'tokens', got '{objective}'")
    return min((r for r in ok if r.accuracy >= top.accuracy - tolerance - 1e-12), key=lambda r: (r.tokens, -r.accuracy))


def pareto_front(results: list[ReplayResult]) -> list[ReplayResult]:
    """Non-dominated (max accuracy, min tokens), cheapest first."""
    front: list[ReplayResult] = []
    for r in sorted(results, key=lambda r: (r.tokens, -r.accuracy)):
        if not front or r.accuracy > front[-1].accuracy + 1e-12:
            front.append(r)
    return front


def cheapest(replayer: Replayer, space: SearchSpace) -> ReplayResult:
    """The least expected tokens in the space: few paths, pruned hardest at the first prune point."""
    cands = [make_config(n, s, "majority", [(space.prefix_lens[0], min(space.keep_ratios))])
             for n in space.n_values for s in space.scorers]
    cands.append(make_config(min(space.n_values), "none", "majority", []))
    return min(replayer.evaluate_many(cands), key=lambda r: r.tokens)


def check_budget(replayer: Replayer, space: SearchSpace, budget: float) -> ReplayResult:
    low = cheapest(replayer, space)
    if budget < low.tokens:
        raise UserError(
            f"--budget {budget:.0f} tokens per problem is below the cheapest config: minimum is "
            f"{math.ceil(low.tokens)} tokens per problem ({low.config.label()})"
        )
    return low


def suggest(trial: optuna.Trial, space: SearchSpace) -> ReplayConfig:
    n = trial.suggest_categorical("n", space.n_values)
    scorer = trial.suggest_categorical("scorer", space.scorers)
    if scorer == "none":
        return make_config(n, "none", "majority", [])
    agg = trial.suggest_categorical("aggregation", space.aggregations)
    k = trial.suggest_int("stages", 1, space.max_stages) if space.max_stages > 1 else 1
    stages = [
        (trial.suggest_categorical(f"prefix_{i}", space.prefix_lens), trial.suggest_categorical(f"keep_ratio_{i}", space.keep_ratios))
        for i in range(k)
    ]
    if len({p for p, _ in stages}) < len(stages):  # repeated prune point: keep the harder cut once
        merged: dict[int, float] = {}
        for p, r in stages:
            merged[p] = min(r, merged.get(p, 1.0))
        stages = list(merged.items())
    return make_config(n, scorer, space.vote(scorer, agg), stages)


def _storage_url(storage: str | None) -> str | None:
    if storage is None or "://" in storage:
        return storage
    return f"sqlite:///{storage}"  # a plain path means a sqlite file


def _open_study(storage: str | None, **kw: Any) -> optuna.Study:
    """create_study (resuming by name); a storage that cannot be opened, or a stored study of another
    kind (other directions), is one line naming --storage, not a SQLAlchemy traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return optuna.create_study(storage=_storage_url(storage), load_if_exists=True, **kw)
    except (SQLAlchemyError, ImportError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"--storage {storage}: cannot open the study '{kw.get('study_name')}' ({msg})") from None


def _quiet_optuna() -> None:
    import warnings

    optuna.logging.set_verbosity(logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def run_study(
    replayer: Replayer,
    space: SearchSpace,
    *,
    budget: float | None,
    n_trials: int = 200,
    seed: int = 0,
    multi_objective: bool = False,
    storage: str | None = None,
    study_name: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    polish_rounds: int = 20,
) -> tuple[optuna.Study, list[ReplayResult]]:
    """Run (or resume, up to ``n_trials`` in total) a study; returns it and every evaluated result.

    Single objective: maximise accuracy, TPE seeded, the budget as a constraint (tokens - budget <= 0).
    Multi-objective: NSGA-II on (accuracy up, tokens down) for the Pareto front. After the sampled
    trials, a few rounds of enqueued neighbour trials polish the best feasible point.
    """
    _quiet_optuna()
    name = study_name or ("stop-pareto" if multi_objective else f"stop-budget-{int(budget or 0)}")

    # Optuna >= 5 reads constraints set on the trial; older versions need constraints_func.
    native = hasattr(optuna.trial.Trial, "set_constraint")

    def constraints(t: optuna.trial.FrozenTrial) -> list[float]:
        return [float(t.user_attrs.get("constraint", 0.0))]

    if multi_objective:
        sampler: optuna.samplers.BaseSampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=24)
        study = _open_study(storage, sampler=sampler, study_name=name, directions=["maximize", "minimize"])
    else:
        sampler = optuna.samplers.TPESampler(
            seed=seed, multivariate=True, n_startup_trials=20,
            constraints_func=constraints if budget is not None and not native else None,
        )
        study = _open_study(storage, sampler=sampler, study_name=name, directions=["maximize"])

    def objective(trial: optuna.Trial) -> Any:
        cfg = suggest(trial, space)
        res = replayer.evaluate(cfg)
        trial.set_user_attr("config", cfg.model_dump(mode="json"))
        trial.set_user_attr("tokens", res.tokens)
        if budget is not None:
            trial.set_user_attr("constraint", res.tokens - budget)
            if native:
                trial.set_constraint("tokens_over_budget", res.tokens - budget)
        if multi_objective:
            return res.accuracy, res.tokens
        return res.accuracy

    done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    todo = max(0, n_trials - done)
    for i in range(todo):
        study.optimize(objective, n_trials=1)
        if progress:
            progress(done + i + 1, n_trials)
    if not multi_objective and polish_rounds:
        _polish(study, objective, space, budget, polish_rounds)
    return study, _results(study, replayer)


def _results(study: optuna.Study, replayer: Replayer) -> list[ReplayResult]:
    return [
        replayer.evaluate(ReplayConfig.model_validate(t.user_attrs["config"]))
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE and "config" in t.user_attrs
    ]


def _neighbours(params: dict[str, Any], space: SearchSpace) -> list[dict[str, Any]]:
    """One-step moves on each ordered axis (N, prune points, keep ratios), single and in pairs (N up
    with keep ratio down keeps the token cost level), plus every scorer and vote at the same point."""
    axes = {"n": space.n_values, **{k: space.keep_ratios for k in params if k.startswith("keep_ratio_")},
            **{k: space.prefix_lens for k in params if k.startswith("prefix_")}}
    out: list[dict[str, Any]] = []

    def step(p: dict[str, Any], key: str, d: int) -> dict[str, Any] | None:
        vals = axes[key]
        i = vals.index(p[key]) + d
        return {**p, key: vals[i]} if 0 <= i < len(vals) else None

    names = list(axes)
    for i, k1 in enumerate(names):
        for d1 in (-1, 1):
            q = step(params, k1, d1)
            if q is None:
                continue
            out.append(q)
            for k2 in names[i + 1:]:
                for d2 in (-1, 1):
                    q2 = step(q, k2, d2)
                    if q2 is not None:
                        out.append(q2)
    for sc in space.scorers:
        if sc != params.get("scorer"):
            base = {k: v for k, v in params.items() if k != "scorer"}
            if sc != "none" and "prefix_0" not in base:
                base.update(aggregation=space.aggregations[0], prefix_0=space.prefix_lens[0], keep_ratio_0=space.keep_ratios[0])
            out.append({**base, "scorer": sc})
    for agg in space.aggregations:
        if "aggregation" in params and agg != params["aggregation"]:
            out.append({**params, "aggregation": agg})
    return out


def _polish(study: optuna.Study, objective: Callable[[optuna.Trial], Any], space: SearchSpace,
            budget: float | None, rounds: int, top: int = 5) -> None:
    """Local search around the best feasible trial, run as enqueued Optuna trials (so it is stored
    and resumable like the rest): TPE finds the region, this settles the last accuracy point."""

    def key(p: dict[str, Any]) -> tuple:
        return tuple(sorted(p.items()))

    def feasible(t: optuna.trial.FrozenTrial) -> bool:
        return t.state == optuna.trial.TrialState.COMPLETE and (budget is None or t.user_attrs.get("constraint", 1) <= 0)

    seen = {key(t.params) for t in study.trials}
    expanded: set[tuple] = set()
    for _ in range(rounds):
        ok = sorted((t for t in study.trials if feasible(t)), key=lambda t: (-t.value, t.user_attrs["tokens"]))
        # the best few distinct policies not yet expanded
        heads, cfgs = [], set()
        for t in ok:
            c = str(t.user_attrs["config"])
            if c in cfgs:
                continue
            cfgs.add(c)
            if key(t.params) not in expanded:
                heads.append(t)
            if len(cfgs) >= top:
                break
        fresh = []
        for t in heads:
            expanded.add(key(t.params))
            for q in _neighbours(t.params, space):
                if key(q) not in seen:
                    seen.add(key(q))
                    fresh.append(q)
        if not fresh:
            return
        for q in fresh:
            study.enqueue_trial(q, skip_if_exists=True)
        study.optimize(objective, n_trials=len(fresh))


def exhaustive(replayer: Replayer, space: SearchSpace) -> list[ReplayResult]:
    return replayer.evaluate_many(grid(space))


SELECTIONS = ("best", "robust")


def config_neighbours(cfg: ReplayConfig, space: SearchSpace) -> list[ReplayConfig]:
    """Policies one step away on each ordered axis (N; each stage's prefix length and keep ratio),
    same scorer and vote: the neighbourhood the ``robust`` rule averages over."""
    n_vals = space.n_values
    if not cfg.stages:
        i = n_vals.index(cfg.n) if cfg.n in n_vals else None
        return [make_config(n_vals[j], "none", "majority", []) for j in (i - 1, i + 1)
                if i is not None and 0 <= j < len(n_vals)]
    alive, stages = cfg.n, []
    for st in cfg.stages:  # keep counts -> the nearest ratio of the space
        r = min(space.keep_ratios, key=lambda x: abs(keep_count(alive, x) - st.keep) + abs(x - st.keep / alive) * 1e-3)
        stages.append([st.prefix_len, r])
        alive = st.keep
    out = []

    def add(n: int, sts: list[list]) -> None:
        if len({p for p, _ in sts}) == len(sts):
            out.append(make_config(n, cfg.scorer, cfg.aggregation, [tuple(s) for s in sts]))  # type: ignore[misc]

    if cfg.n in n_vals:
        i = n_vals.index(cfg.n)
        for j in (i - 1, i + 1):
            if 0 <= j < len(n_vals):
                add(n_vals[j], stages)
    for k, (p, r) in enumerate(stages):
        for axis, vals, cur in ((0, space.prefix_lens, p), (1, space.keep_ratios, r)):
            if cur not in vals:
                continue
            i = vals.index(cur)
            for j in (i - 1, i + 1):
                if 0 <= j < len(vals):
                    sts = [list(s) for s in stages]
                    sts[k][axis] = vals[j]
                    add(cfg.n, sts)
    return [c for c in dict.fromkeys(out) if c != cfg]


def select(
    results: list[ReplayResult],
    budget: float | None,
    *,
    rule: str = "best",
    replayer: Replayer | None = None,
    space: SearchSpace | None = None,
    objective: str = "accuracy",
    tolerance: float = 0.01,
    margin_se: float = 1.0,
    candidates: int = 20,
) -> ReplayResult | None:
    """Pick the recommendation among evaluated policies.

    ``best``: the most accurate within budget (``best_under_budget``). ``robust``: among the feasible
    policies whose accuracy is within ``margin_se`` standard errors (from the top policy's 95%
    interval) of the best, the one whose *neighbourhood* (itself and its one-step neighbours, any
    token cost) replays best on average. Training accuracy of the single best policy is inflated
    by selection among many near-tied ones; a policy in a flat good region holds up better on new
    problems. Measured, not assumed: docs/benchmarks.md (regret) says which rule wins.
    """
    if rule == "best" or objective == "tokens":
        return best_under_budget(results, budget, objective, tolerance)
    if rule != "robust":
        raise UserError(f"--selection: must be one of {', '.join(SELECTIONS)}, got '{rule}'")
    if replayer is None or space is None:
        raise ValueError("robust selection needs the replayer and the space")
    top = best_under_budget(results, budget)
    if top is None:
        return None
    margin = margin_se * (top.ci_high - top.ci_low) / 3.92
    ok = {r.config: r for r in results if (budget is None or r.tokens <= budget) and r.accuracy >= top.accuracy - margin}
    pool = sorted(ok.values(), key=lambda r: (-r.accuracy, r.tokens))[:candidates]

    def smoothed(r: ReplayResult) -> float:
        near = []
        for c in config_neighbours(r.config, space):
            try:
                near.append(replayer.evaluate(c).accuracy)
            except UserError:  # e.g. a neighbour outside the recorded points
                continue
        return (r.accuracy + sum(near)) / (1 + len(near))

    return max(pool, key=lambda r: (smoothed(r), r.accuracy, -r.tokens))
