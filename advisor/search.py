"""Search the pruning policy space on replayed calibration data: Optuna studies and an exhaustive grid.

The space is finite (categorical N, prune points, keep ratios, scorer, vote), so the exhaustive grid
is the ground truth the Optuna search is benchmarked against (regret). Budgets are expected generated
tokens per problem, summed over all N paths.

A study in a shared storage (``--storage``: a sqlite file, any RDB URL, or ``journal:///path`` for
Optuna's journal file) can be searched by several worker processes at once: each adds sampled trials
until the study holds ``n_trials`` of them in total (a claim check, exact even when workers race),
then the polish runs as shared enqueued trials, and every worker's result reads the whole study. A
dead worker's RUNNING trial is failed once its heartbeat goes stale (Optuna's heartbeat machinery,
one protocol for RDB and journal storage: ``_heartbeat_storage``), so a SIGKILL loses no finished
trial and leaves nothing RUNNING.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import random
import socket
import time
from collections.abc import Callable
from typing import Any

import optuna
from pydantic import BaseModel, Field

from sglang_stop.advisor.calibration import CalibrationSet
from sglang_stop.advisor.replay import Replayer, ReplayConfig, ReplayResult, Stage, keep_count
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


JOURNAL = "journal://"
_HEARTBEAT_ATTR = "stop_heartbeat"
_GRACE_BEATS = 3  # a RUNNING trial silent for this many heartbeats belongs to a dead worker
_POLL = 0.2  # seconds between looks at a shared study while other workers finish


def _storage_url(storage: str | None) -> str | None:
    if storage is None or "://" in storage:
        return storage
    return f"sqlite:///{storage}"  # a plain path means a sqlite file


def _heartbeat_storage(base: type, *args: Any, interval: int, **kw: Any) -> optuna.storages.BaseStorage:
    """``base`` (JournalStorage or RDBStorage) with one heartbeat protocol for both, through Optuna's
    own machinery (BaseHeartbeat: optimize beats while a trial runs, ``fail_stale_trials`` fails
    the silent ones). The beat is a time stamp in the trial's system attrs; a trial that never beat
    (its worker died between creating it and the first beat) is judged by its start time, so no
    dead worker's trial stays RUNNING. Wall-clock times: workers on several hosts need synced clocks."""
    from optuna.storages._heartbeat import BaseHeartbeat

    class _Beating(base, BaseHeartbeat):  # type: ignore[misc, valid-type]
        def record_heartbeat(self, trial_id: int) -> None:
            try:
                self.set_trial_system_attr(trial_id, _HEARTBEAT_ATTR, time.time())
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # failed as stale by another worker while this one stalled

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now, out = time.time(), []
            for t in self.get_all_trials(study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                last = t.system_attrs.get(_HEARTBEAT_ATTR)
                if last is None and t.datetime_start is not None:
                    last = t.datetime_start.timestamp()
                if last is not None and now - last > _GRACE_BEATS * interval:
                    out.append(t._trial_id)
            return out

        def get_heartbeat_interval(self) -> int | None:
            return interval

        def get_heartbeat_stale_trial_callback(self) -> None:
            return None

        get_failed_trial_callback = get_heartbeat_stale_trial_callback  # optuna < 4.9

    return _Beating(*args, **kw)


def open_storage(storage: str | None, heartbeat: int = 10) -> optuna.storages.BaseStorage | None:
    """The shared storage behind ``--storage`` (None: in memory). A plain path is a sqlite file,
    ``journal:///PATH`` Optuna's journal file, anything else an RDB URL. Both kinds get a heartbeat of
    ``heartbeat`` seconds (``_heartbeat_storage``), so a killed worker's trial is failed, not left
    RUNNING for ever."""
    url = _storage_url(storage)
    if url is None:
        return None
    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

        path = url[len(JOURNAL):]
        # a worker killed inside the (millisecond) lock leaves the lock file: released after 10 s
        backend = JournalFileBackend(path, lock_obj=JournalFileSymlinkLock(path, grace_period=10))
        return _heartbeat_storage(optuna.storages.JournalStorage, backend, interval=heartbeat)
    # sqlite: writers from several processes queue on the file lock (the default 5 s wait is too short)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    return _heartbeat_storage(optuna.storages.RDBStorage, url, engine_kwargs=engine, interval=heartbeat)


def _open_study(storage: str | None, heartbeat: int = 10, **kw: Any) -> optuna.Study:
    """create_study (resuming by name); a storage that cannot be opened, or a stored study of another
    kind (other directions), is one line naming --storage, not a SQLAlchemy traceback. Workers that
    start together may race on creating the schema: a failed first open is retried."""
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(5):
        try:
            return optuna.create_study(storage=open_storage(storage, heartbeat), load_if_exists=True, **kw)
        except (SQLAlchemyError, ImportError, ValueError, OSError) as e:
            if attempt < 4 and storage is not None and isinstance(e, SQLAlchemyError):
                time.sleep(0.2 * (attempt + 1))
                continue
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"--storage {storage}: cannot open the study '{kw.get('study_name')}' ({msg})") from None
    raise AssertionError("unreachable")


class _Overflow(Exception):
    """A trial claimed past the study's requested count (workers raced for the last ones): it is
    failed before anything is sampled or evaluated, and never counted."""


class _NotOverflow(logging.Filter):
    """Drops Optuna's two "Trial N failed ..." warnings for an over-claimed trial (bookkeeping, not a
    failure to report); a real failure still shows."""

    def __init__(self) -> None:
        super().__init__()
        self._muted: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        head = msg.split(" failed with ", 1)[0]  # "Trial N"
        if "_Overflow(" in msg:
            self._muted.add(head)
            return False
        if head in self._muted and " failed with value " in msg:
            self._muted.discard(head)
            return False
        return True


def _shared_sampler(sampler: optuna.samplers.BaseSampler, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler of a study in shared storage. Workers of one study would all draw the same
    proposals from one seed: the generators are reseeded from (seed, trial number) before each
    trial, so every trial draws its own numbers and a resumed or parallel study does not repeat its
    start-up proposals. An enqueued polish trial has every parameter fixed: the (storage-reading)
    relative model is skipped for it."""
    before, infer = sampler.before_trial, sampler.infer_relative_search_space

    def before_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        s = (seed * 1_000_003 + trial.number) % 2**32
        for owner in (sampler, getattr(sampler, "_random_sampler", None)):
            rng = getattr(owner, "_rng", None)
            if rng is not None and hasattr(rng, "rng"):
                rng.rng.seed(s)
        before(study, trial)

    def infer_relative_search_space(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return {} if _is_polish(trial) else infer(study, trial)

    sampler.before_trial = before_trial  # type: ignore[method-assign]
    sampler.infer_relative_search_space = infer_relative_search_space  # type: ignore[method-assign]
    return sampler


def _is_polish(t: optuna.trial.FrozenTrial) -> bool:
    return "fixed_params" in t.system_attrs  # enqueued by _polish


def _fail_stale(study: optuna.Study) -> None:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    if is_heartbeat_enabled(study._storage):
        optuna.storages.fail_stale_trials(study)


_LIVE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)


def _claim(study: optuna.Study, trial: optuna.Trial, n_trials: int) -> None:
    """Raise _Overflow when ``n_trials`` sampled trials created before this one are complete or
    running: exact however many workers race, since creation order is the storage's."""
    ahead = [t for t in study.get_trials(deepcopy=False, states=_LIVE)
             if not _is_polish(t) and t._trial_id < trial._trial_id]
    if len(ahead) >= n_trials:
        raise _Overflow(f"the study already holds {n_trials} sampled trials")


def _optimize_one(study: optuna.Study, func: Callable[[optuna.Trial], Any]) -> None:
    try:
        study.optimize(func, n_trials=1, catch=(_Overflow,))
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # this worker stalled past the grace period and its trial was failed as stale: not counted
    except ValueError as e:
        # SQLite has no SELECT ... FOR UPDATE: two workers can pop one enqueued trial; the second
        # to finish finds it told already (the result is the same policy's, nothing is lost)
        if "Cannot tell a" not in str(e):
            raise


def _sample(study: optuna.Study, objective: Callable[[optuna.Trial], Any], n_trials: int,
            progress: Callable[[int, int], None] | None) -> None:
    """Add sampled trials until the study holds ``n_trials`` complete ones (this worker's and any
    other's). When the missing ones are running elsewhere, wait: a dead worker's trial is failed
    at its stale heartbeat and then re-done here, so the count is reached even after a SIGKILL."""

    def claimed(trial: optuna.Trial) -> Any:
        _claim(study, trial, n_trials)
        value = objective(trial)
        _claim(study, trial, n_trials)  # again: a lower claim may have committed meanwhile (RDB)
        return value

    shown = -1
    while True:
        _fail_stale(study)
        live = [t for t in study.get_trials(deepcopy=False, states=_LIVE) if not _is_polish(t)]
        done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in live)
        if progress and done != shown:
            progress(min(done, n_trials), n_trials)
            shown = done
        if done >= n_trials:
            return
        if len(live) >= n_trials:
            time.sleep(_POLL)
            continue
        _optimize_one(study, claimed)


def _quiet_optuna() -> None:
    import warnings

    optuna.logging.set_verbosity(logging.WARNING)
    logger = logging.getLogger("optuna.study._optimize")  # filters act where a record is made
    if not any(isinstance(f, _NotOverflow) for f in logger.filters):
        logger.addFilter(_NotOverflow())  # an over-claimed trial is bookkeeping, not a failure to report
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
    heartbeat: int = 10,
) -> tuple[optuna.Study, list[ReplayResult]]:
    """Run (or resume, or join as one more worker) a study until it holds ``n_trials`` sampled
    trials in total; returns it and every evaluated result of the whole study.

    Single objective: maximise accuracy, TPE seeded, the budget as a constraint (tokens - budget <= 0).
    Multi-objective: NSGA-II on (accuracy up, tokens down) for the Pareto front. After the sampled
    trials, rounds of enqueued neighbour trials polish the best feasible point (not counted in
    ``n_trials``). With a ``storage``, the sampler is reseeded per trial (parallel workers propose
    different trials) and ``heartbeat`` (seconds) lets a dead worker's trial be failed.
    """
    _quiet_optuna()
    name = study_name or ("stop-pareto" if multi_objective else f"stop-budget-{int(budget or 0)}")

    # Optuna >= 5 reads constraints set on the trial; older versions need constraints_func.
    native = hasattr(optuna.trial.Trial, "set_constraint")

    def constraints(t: optuna.trial.FrozenTrial) -> list[float]:
        return [float(t.user_attrs.get("constraint", 0.0))]

    if multi_objective:
        sampler: optuna.samplers.BaseSampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=24)
        directions = ["maximize", "minimize"]
    else:
        sampler = optuna.samplers.TPESampler(
            seed=seed, multivariate=True, n_startup_trials=20,
            constraints_func=constraints if budget is not None and not native else None,
        )
        directions = ["maximize"]
    if storage is not None:
        sampler = _shared_sampler(sampler, seed)
    study = _open_study(storage, heartbeat, sampler=sampler, study_name=name, directions=directions)
    worker = f"{socket.gethostname()}:{os.getpid()}"

    def objective(trial: optuna.Trial) -> Any:
        cfg = suggest(trial, space)
        res = replayer.evaluate(cfg)
        trial.set_user_attr("config", cfg.model_dump(mode="json"))
        trial.set_user_attr("tokens", res.tokens)
        if storage is not None:
            trial.set_user_attr("worker", worker)  # which process of a shared study made it
        if budget is not None:
            trial.set_user_attr("constraint", res.tokens - budget)
            if native:
                trial.set_constraint("tokens_over_budget", res.tokens - budget)
        if multi_objective:
            return res.accuracy, res.tokens
        return res.accuracy

    _sample(study, objective, n_trials, progress)
    if not multi_objective and polish_rounds:
        _polish(study, objective, space, budget, polish_rounds, shared=storage is not None)
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
    axes: dict[str, list[Any]] = {
        "n": list(space.n_values), **{k: list(space.keep_ratios) for k in params if k.startswith("keep_ratio_")},
        **{k: list(space.prefix_lens) for k in params if k.startswith("prefix_")}}
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


def _key(p: dict[str, Any]) -> tuple:
    return tuple(sorted(p.items()))


def _seen(trials: list[optuna.trial.FrozenTrial]) -> set[tuple]:
    """Parameter sets the study holds or is about to run (a failed trial's may be re-done)."""
    return {_key(p) for t in trials if t.state != optuna.trial.TrialState.FAIL
            for p in (t.params, t.system_attrs.get("fixed_params", {}))}


def _fresh_neighbours(trials: list[optuna.trial.FrozenTrial], space: SearchSpace, budget: float | None,
                      top: int) -> list[dict[str, Any]]:
    """Unseen neighbours of the best ``top`` distinct feasible policies of the study (every worker's)."""
    ok = sorted((t for t in trials if t.state == optuna.trial.TrialState.COMPLETE
                 and (budget is None or t.user_attrs.get("constraint", 1) <= 0)),
                key=lambda t: (-(t.value or 0.0), t.user_attrs["tokens"]))
    heads, cfgs = [], set()
    for t in ok:
        c = str(t.user_attrs["config"])
        if c in cfgs:
            continue
        cfgs.add(c)
        heads.append(t)
        if len(cfgs) >= top:
            break
    seen, fresh = _seen(trials), []
    for t in heads:
        for q in _neighbours(t.params, space):
            if _key(q) not in seen:
                seen.add(_key(q))
                fresh.append(q)
    return fresh


def _polish(study: optuna.Study, objective: Callable[[optuna.Trial], Any], space: SearchSpace,
            budget: float | None, rounds: int, top: int = 5, shared: bool = False) -> None:
    """Local search around the best feasible trials, run as enqueued Optuna trials (so it is stored,
    resumable, and shared by the workers of one study): TPE finds the region, this settles the last
    accuracy point. A round enqueues and runs the unseen neighbours of the best ``top`` policies;
    the polish ends when there are none (or after ``rounds`` rounds of this worker) and no other
    worker's trial is still running. ``shared``: each worker walks its round in its own random
    order and skips a neighbour another worker has taken meanwhile, so workers rarely run one twice
    (a twice-run neighbour is a duplicate COMPLETE trial of the same policy, harmless)."""
    TS = optuna.trial.TrialState
    order = random.Random(os.getpid()) if shared else None

    def enqueued_only(trial: optuna.Trial) -> Any:
        if not trial._fixed_params:  # another worker took the last enqueued trial: sample nothing
            raise _Overflow("no enqueued polish trial left")
        return objective(trial)

    done_rounds = 0
    while True:
        _fail_stale(study)
        trials = study.get_trials(deepcopy=False)
        if any(t.state == TS.WAITING for t in trials):  # e.g. enqueued by a worker that died since
            _optimize_one(study, enqueued_only)
            continue
        fresh = _fresh_neighbours(trials, space, budget, top) if done_rounds < rounds else []
        if fresh:
            done_rounds += 1
            if order is not None:
                order.shuffle(fresh)
            for q in fresh:
                if order is not None and _key(q) in _seen(study.get_trials(deepcopy=False)):
                    continue
                study.enqueue_trial(q)
                _optimize_one(study, enqueued_only)
            continue
        if not any(t.state == TS.RUNNING for t in trials):
            return
        time.sleep(_POLL)  # another worker's polish trial may still move the best policies


def exhaustive(replayer: Replayer, space: SearchSpace) -> list[ReplayResult]:
    return replayer.evaluate_many(grid(space))


SELECTIONS = ("best", "robust")


def config_neighbours(cfg: ReplayConfig, space: SearchSpace) -> list[ReplayConfig]:
    """Policies one step away on each ordered axis (N; each stage's prefix length and keep ratio),
    same scorer and vote: the neighbourhood the ``robust`` rule averages over."""
    n_vals = space.n_values
    if not cfg.stages:
        if cfg.n not in n_vals:
            return []
        i = n_vals.index(cfg.n)
        return [make_config(n_vals[j], "none", "majority", []) for j in (i - 1, i + 1) if 0 <= j < len(n_vals)]
    alive = cfg.n
    stages: list[list[Any]] = []
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
        axes_k: tuple[tuple[int, list[Any], Any], ...] = ((0, list(space.prefix_lens), p),
                                                         (1, list(space.keep_ratios), r))
        for axis, vals, cur in axes_k:
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
