"""`stop-advise`: thin click layer over the advisor library. Every command takes --json.

Budgets everywhere are expected generated tokens per problem, summed over all N paths (prefixes of
pruned paths included), as in the paper's C.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import click

from sglang_stop.errors import UserError, warn

BUDGET_HELP = "token budget per problem: expected generated tokens summed over all N paths"


class _Group(click.Group):
    """UserError, and click's own usage errors (a bad or missing option), -> one line on stderr,
    exit 2 (never a traceback, never a multi-line usage dump)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The console script and ``python -m sglang_stop.advisor.cli`` run under the project's one CLI policy
        (sglang_stop.cli_errors: signals end with one line and 130/143, a bug keeps its traceback).
        Tests that call ``main.main(...)`` through click's CliRunner are unaffected."""
        from sglang_stop.cli_errors import run_cli_group

        argv = list(args[0]) if args and args[0] is not None else sys.argv[1:]
        if not argv:  # bare `stop-advise`: the help, not "error: Usage: ..."
            click.echo(self.get_help(click.Context(self, info_name="stop-advise")))
            sys.exit(0)
        run_cli_group(self, argv)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as e:
            _fail(str(e))
        except click.ClickException as e:
            _fail(e.format_message())


def _fail(msg: str) -> None:
    click.echo("error: " + "; ".join(msg.splitlines()), err=True)
    sys.exit(2)


def _emit(as_json: bool, obj: Any, text: str) -> None:
    """--json: one JSON object on one stdout line; otherwise a short human-readable summary."""
    click.echo(json.dumps(obj, default=str) if as_json else text)


# Option checks: all run before any calibration file is read or any replay starts.


def _tokens(opt: str, v: float) -> None:
    if not (math.isfinite(v) and v > 0):
        raise UserError(f"{opt}: must be a positive, finite number of tokens, got {v}")


def _at_least(opt: str, v: int, lo: int = 1) -> None:
    if v < lo:
        raise UserError(f"{opt}: must be >= {lo}, got {v}")


def _max_stages(v: int) -> None:
    if not 1 <= v <= 3:
        raise UserError(f"--max-stages: must be 1, 2 or 3, got {v}")


def _storage(storage: str | None) -> None:
    """A sqlite path (plain or sqlite:///PATH) or a journal file (journal:///PATH) must name a file in
    an existing directory; other RDB URLs are checked when the study opens (search.run_study turns
    their errors into one line)."""
    if storage is None:
        return
    if storage.startswith("journal:"):
        if not storage.startswith("journal:///"):
            raise UserError(f"--storage {storage}: a journal file is journal:///ABSOLUTE/PATH")
        path, kind = storage[len("journal://"):], "journal file"
    elif storage.startswith("sqlite:///"):
        path, kind = storage[len("sqlite:///"):], "sqlite file"
    elif "://" in storage:
        return
    else:
        path, kind = storage, "sqlite file"
    p = Path(path)
    if not path.strip() or p.is_dir():
        raise UserError(f"--storage {storage}: expected a {kind} path, got a directory")
    if not p.parent.is_dir():
        raise UserError(f"--storage {storage}: directory {p.parent} does not exist")


def _workers(ctx: click.Context, storage: str | None, heartbeat: int) -> None:
    _at_least("--heartbeat", heartbeat)
    if storage is None and _given(ctx, "heartbeat"):
        warn("--heartbeat: used only with --storage (an in-memory study has one worker); ignored")


def _given(ctx: click.Context, name: str) -> bool:
    src = ctx.get_parameter_source(name)
    return src is not None and src.name not in ("DEFAULT", "DEFAULT_MAP")


def _calib_opt(f: Any) -> Any:
    return click.option("--calib", "calib", multiple=True, required=True, type=click.Path(dir_okay=False),
                        help="calibration JSONL (repeatable)")(f)


def _load(calib: tuple[str, ...]) -> Any:
    from sglang_stop.advisor.calibration import load_calibration

    cs = load_calibration(list(calib))
    for w in cs.warnings:
        warn(w)
    return cs


def _progress(enabled: bool) -> Any:
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(desc="trials", unit="trial", file=sys.stderr, leave=False)

    def cb(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return cb, bar.close


@click.group(cls=_Group)
@click.version_option(package_name="sglang-stop")
def main() -> None:
    """Deployment advisor for STOP pruning: replay calibration paths, fit the paper's guideline,
    search (N, prune points, keep, scorer, vote) under a token budget, write a runtime config."""


@main.command()
@click.option("--budget", type=float, required=True, help=BUDGET_HELP)
@click.option("--prefix-len", type=float, required=True, help="prefix length Lp in tokens (per path)")
@click.option("--task-len", type=float, required=True, help="task length Lt: mean full path length in tokens")
@click.option("--constants", default="paper", show_default=True, help="'paper' or a constants file from `fit`")
@click.option("--json", "as_json", is_flag=True, help="print {inverse_ratio, keep_ratio}")
def guideline(budget: float, prefix_len: float, task_len: float, constants: str, as_json: bool) -> None:
    """The paper's guideline (its Eq 7) for the keep ratio: 1/gamma = a * C^b * Lp^c * Lt^-d, in units
    of 1024 tokens."""
    from sglang_stop.advisor.guideline import inverse_ratio, load_constants

    for opt, v in (("--budget", budget), ("--prefix-len", prefix_len), ("--task-len", task_len)):
        _tokens(opt, v)
    k = load_constants(constants)
    inv = inverse_ratio(budget, prefix_len, task_len, k)
    _emit(as_json, {"inverse_ratio": inv, "keep_ratio": 1 / inv},
          f"1/gamma = {inv:.2f}\ngamma   = {1 / inv:.4f} (keep about 1 path in {inv:.1f})")


@main.command()
@_calib_opt
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="constants JSON to write")
@click.option("--scorer", default=None, help="scorer whose optima are fitted (default: stop if recorded)")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def fit(calib: tuple[str, ...], out: str, scorer: str | None, seed: int, as_json: bool) -> None:
    """Fit the guideline's constants to replayed optima (constants that cannot vary stay at the paper's)."""
    from sglang_stop.advisor.fitdata import fit_points
    from sglang_stop.advisor.guideline import fit as do_fit
    from sglang_stop.advisor.guideline import save_constants

    cs = _load(calib)
    pts = fit_points(cs, scorer=scorer, seed=seed)
    k = do_fit(pts, source=f"fit on {', '.join(calib)}")
    save_constants(k, out)
    se = k.stderr
    txt = "\n".join(
        f"{n} = {getattr(k, n):.4g}" + (f" +- {se[n]:.2g}" if n in se else " (held at paper value)") for n in "abcd"
    ) + f"\n{k.n_points} points, residual std (log) {k.residual_std or 0:.3f}; wrote {out}"
    _emit(as_json, {**k.model_dump(), "out": out}, txt)


@main.command()
@_calib_opt
@click.option("--n", "n", type=int, required=True, help="paths launched per problem")
@click.option("--stage", "stages", multiple=True, help="PREFIX_LEN:KEEP (repeatable, in order)")
@click.option("--scorer", default="none", show_default=True)
@click.option("--aggregation", type=click.Choice(["majority", "weighted"]), default="majority", show_default=True)
@click.option("--draws", default=128, show_default=True, help="random path subsets per problem")
@click.option("--first-paths", is_flag=True,
              help="replay only the first N recorded paths (what a run with the calibration's seed samples)")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def replay(calib: tuple[str, ...], n: int, stages: tuple[str, ...], scorer: str, aggregation: str, draws: int,
           first_paths: bool, seed: int, as_json: bool) -> None:
    """Replay one policy on calibration paths: accuracy and tokens per problem with 95% intervals."""
    from sglang_stop.advisor.replay import Replayer, ReplayConfig, Stage, policy_notes

    _at_least("--n", n)
    _at_least("--draws", draws)
    parsed = []
    for s in stages:
        try:
            plen, keep = (int(x) for x in s.split(":"))
        except ValueError:
            raise UserError(f"--stage: expected PREFIX_LEN:KEEP, got '{s}'") from None
        if plen < 1 or keep < 1:
            raise UserError(f"--stage {s}: prefix length and keep must be >= 1")
        parsed.append(Stage(prefix_len=plen, keep=keep))
    cfg = ReplayConfig(n=n, stages=tuple(parsed), scorer=scorer, aggregation=aggregation)  # type: ignore[arg-type]
    notes = policy_notes(cfg)
    if first_paths and _given(click.get_current_context(), "draws"):
        notes.append("--draws: --first-paths replays one draw (the first N recorded paths); --draws is ignored")
    cs = _load(calib)
    rep = Replayer(cs, draws=draws, seed=seed, first_paths=first_paths)
    rep.check(cfg)
    for w in notes:
        warn(w)
    res = rep.evaluate(cfg)
    _emit(as_json, {**res.model_dump(mode="json"), "warnings": notes}, _line(res))


def _line(r: Any) -> str:
    return (f"{r.config.label()}: accuracy {100 * r.accuracy:.1f}% [{100 * r.ci_low:.1f}, {100 * r.ci_high:.1f}], "
            f"tokens/problem {r.tokens:,.0f} [{r.tokens_ci_low:,.0f}, {r.tokens_ci_high:,.0f}]")


def _search_opts(f: Any) -> Any:
    for opt in reversed([
        click.option("--trials", default=200, show_default=True, help="Optuna trials (a resumed study runs up to this total)"),
        click.option("--seed", default=0, show_default=True, help="sampler and replay seed"),
        click.option("--storage", default=None,
                     help="Optuna storage shared by any number of worker processes: a sqlite file path, "
                          "journal:///PATH (a journal file) or any RDB URL such as postgresql+psycopg://... "
                          "(default: in memory)"),
        click.option("--study-name", default=None,
                     help="study name (resumes, or joins the other workers, if it exists in --storage)"),
        click.option("--heartbeat", default=10, show_default=True,
                     help="seconds between a --storage worker's heartbeats; a trial silent for 3 is a dead "
                          "worker's and is failed (then re-done)"),
        click.option("--max-stages", default=1, show_default=True, help="prune stages searched (1 = the paper's)"),
        click.option("--scorers", default=None, help="comma-separated scorers to search (default: all recorded + none, random)"),
        click.option("--draws", default=128, show_default=True, help="random path subsets per problem"),
    ]):
        f = opt(f)
    return f


def _check_search(trials: int | None, draws: int, max_stages: int, storage: str | None = None) -> None:
    if trials is not None:
        _at_least("--trials", trials)
    _at_least("--draws", draws)
    _max_stages(max_stages)
    _storage(storage)


def _stages_fit(cs: Any, max_stages: int) -> None:
    if max_stages > len(cs.prefix_lens):
        raise UserError(f"--max-stages {max_stages}: the calibration records only {len(cs.prefix_lens)} prune "
                        f"point(s) ({', '.join(map(str, cs.prefix_lens))})")


def _setup(calib: tuple[str, ...], seed: int, max_stages: int, scorers: str | None, draws: int) -> Any:
    from sglang_stop.advisor.replay import Replayer
    from sglang_stop.advisor.search import default_space

    cs = _load(calib)
    _stages_fit(cs, max_stages)
    sc = [s.strip() for s in scorers.split(",")] if scorers else None
    if sc:
        unknown = [s for s in sc if s not in cs.all_scorers]
        if unknown:
            raise UserError(f"--scorers: {', '.join(unknown)} not recorded; have {', '.join(cs.all_scorers)}")
    return cs, default_space(cs, max_stages=max_stages, scorers=sc), Replayer(cs, draws=draws, seed=seed)


@main.command()
@_calib_opt
@click.option("--budget", type=float, required=True, help=BUDGET_HELP)
@click.option("--objective", type=click.Choice(["accuracy", "tokens"]), default="accuracy", show_default=True,
              help="accuracy: most accurate within budget; tokens: cheapest within --tolerance of that")
@click.option("--tolerance", default=0.01, show_default=True, help="accuracy slack for --objective tokens (fraction)")
@click.option("--selection", type=click.Choice(["best", "robust"]), default="best", show_default=True,
              help="best: highest replayed accuracy; robust: among those within 1 SE of it, the best neighbourhood")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="runtime config to write (.yaml or .json)")
@_search_opts
@click.option("--polish-rounds", default=20, show_default=True,
              help="rounds of local search around the best trials after the sampled ones (enqueued trials, "
                   "shared by the workers of a --storage study, not counted in --trials); 0 = none")
@click.option("--json", "as_json", is_flag=True)
def recommend(calib: tuple[str, ...], budget: float, objective: str, tolerance: float, selection: str, out: str,
              trials: int, seed: int, storage: str | None, study_name: str | None, heartbeat: int, max_stages: int,
              scorers: str | None, draws: int, polish_rounds: int, as_json: bool) -> None:
    """Search under a budget and write a config `sglang-stop run --config` accepts as is."""
    from sglang_stop.advisor.noise import noise_notes, noise_report
    from sglang_stop.advisor.recommend import to_runtime_config
    from sglang_stop.advisor.search import check_budget, run_study, select
    from sglang_stop.config import dump_config

    _tokens("--budget", budget)
    _check_search(trials, draws, max_stages, storage)
    _workers(click.get_current_context(), storage, heartbeat)
    _at_least("--polish-rounds", polish_rounds, 0)
    if not (math.isfinite(tolerance) and 0 <= tolerance < 1):
        raise UserError(f"--tolerance: must be a fraction in [0, 1), got {tolerance}")
    if selection == "robust" and objective == "tokens":
        raise UserError("--selection robust: applies to --objective accuracy only (tokens picks the cheapest "
                        "within --tolerance)")
    if objective == "accuracy" and _given(click.get_current_context(), "tolerance"):
        warn("--tolerance: used only with --objective tokens; ignored")
    t0 = time.perf_counter()
    cs, space, rep = _setup(calib, seed, max_stages, scorers, draws)
    check_budget(rep, space, budget)
    cb, close = _progress(not as_json and sys.stderr.isatty())
    try:
        study, results = run_study(rep, space, budget=budget, n_trials=trials, seed=seed, storage=storage,
                                   study_name=study_name, progress=cb, heartbeat=heartbeat,
                                   polish_rounds=polish_rounds)
    finally:
        close()
    best = select(results, budget, rule=selection, replayer=rep, space=space, objective=objective, tolerance=tolerance)
    if best is None:
        low = min(results, key=lambda r: r.tokens)
        raise UserError(f"--budget {budget:.0f}: no searched config fits; minimum is {low.tokens:.0f} tokens per problem")
    comps = noise_report(rep, best, results, budget, space.n_values)
    notes = noise_notes(best, comps)
    elapsed = time.perf_counter() - t0
    cfg = to_runtime_config(best, cs, budget=budget, extra={
        "objective": objective, "selection": selection, "study": study.study_name, "trials": len(study.trials), "seed": seed,
        "search_seconds": round(elapsed, 2),
        "within_noise_of": [c.baseline for c in comps if c.within_noise], "notes": notes})
    dump_config(cfg, out)
    text = [_line(best), *(c.line() for c in comps), *(f"note: {n}" for n in notes),
            f"wrote {out} ({len(study.trials)} trials, {elapsed:.1f}s)"]
    _emit(as_json, {**best.model_dump(mode="json"), "out": out, "seconds": round(elapsed, 2),
                    "noise": [c.model_dump() for c in comps], "notes": notes,
                    "runtime_config": cfg.model_dump(mode="json")}, "\n".join(text))


@main.command()
@_calib_opt
@_search_opts
@click.option("--exhaustive", is_flag=True, help="replay the whole grid instead of an NSGA-II study")
@click.option("--json", "as_json", is_flag=True)
def pareto(calib: tuple[str, ...], trials: int, seed: int, storage: str | None, study_name: str | None, heartbeat: int,
           max_stages: int, scorers: str | None, draws: int, exhaustive: bool, as_json: bool) -> None:
    """Accuracy vs tokens trade-off: the non-dominated configs, cheapest first."""
    from sglang_stop.advisor.search import exhaustive as run_grid
    from sglang_stop.advisor.search import pareto_front, run_study

    _check_search(None if exhaustive else trials, draws, max_stages, storage)
    ctx = click.get_current_context()
    if exhaustive:
        _at_least("--heartbeat", heartbeat)
        dropped = [f"--{o.replace('_', '-')}" for o in ("trials", "storage", "study_name", "heartbeat") if _given(ctx, o)]
        if dropped:
            warn(f"{', '.join(dropped)}: not used with --exhaustive (the whole grid is replayed); ignored")
    else:
        _workers(ctx, storage, heartbeat)
    cs, space, rep = _setup(calib, seed, max_stages, scorers, draws)
    if exhaustive:
        results = run_grid(rep, space)
    else:
        _, results = run_study(rep, space, budget=None, n_trials=trials, seed=seed, multi_objective=True,
                               storage=storage, study_name=study_name, heartbeat=heartbeat)
    front = pareto_front(results)
    rows = [f"{'tokens/problem':>15}  {'accuracy %':>10}  {'95% interval':>13}  config"]
    rows += [f"{r.tokens:>15,.0f}  {100 * r.accuracy:>10.1f}  {100 * r.ci_low:>5.1f}-{100 * r.ci_high:<6.1f}  {r.config.label()}"
             for r in front]
    _emit(as_json, {"front": [r.model_dump(mode="json") for r in front], "configs": len(results)}, "\n".join(rows))


@main.command()
@_calib_opt
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG to write")
@click.option("--budget", type=float, default=None, help="mark this budget (" + BUDGET_HELP + ")")
@click.option("--max-stages", default=1, show_default=True)
@click.option("--draws", default=64, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def plot(calib: tuple[str, ...], out: str, budget: float | None, max_stages: int, draws: int, seed: int, as_json: bool) -> None:
    """PNG: best replayed accuracy vs budget per scorer, and the Pareto front (exhaustive grid)."""
    from sglang_stop.advisor.plots import plot_results
    from sglang_stop.advisor.search import exhaustive

    if budget is not None:
        _tokens("--budget", budget)
    _check_search(None, draws, max_stages)
    cs, space, rep = _setup(calib, seed, max_stages, None, draws)
    results = exhaustive(rep, space)
    plot_results(results, out, title=f"{cs.records[0].model_id} on {cs.records[0].task} ({cs.n_problems} problems)",
                 budget=budget)
    _emit(as_json, {"out": out, "configs": len(results)}, f"wrote {out} ({len(results)} configs replayed)")


@main.command()
@_calib_opt
@click.option("--budget", "budgets", type=float, multiple=True, required=True, help=BUDGET_HELP + " (repeatable)")
@click.option("--holdout", default=0.5, show_default=True, help="fraction of problems held out for judging")
@click.option("--splits", default=1, show_default=True, help="random train/held-out splits (regret is averaged)")
@click.option("--trials", default=200, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--max-stages", default=1, show_default=True)
@click.option("--draws", default=128, show_default=True, help="random path subsets per problem")
@click.option("--selection", "selections", type=click.Choice(["best", "robust"]), multiple=True,
              help="selection rule(s) to judge, on the same splits (repeatable; default: best)")
@click.option("--json", "as_json", is_flag=True)
def regret(calib: tuple[str, ...], budgets: tuple[float, ...], holdout: float, splits: int, trials: int, seed: int,
           max_stages: int, draws: int, selections: tuple[str, ...], as_json: bool) -> None:
    """Benchmark: recommend on training problems, compare with the exhaustive grid's best on held-out ones."""
    from sglang_stop.advisor.validate import holdout_regret

    for b in budgets:
        _tokens("--budget", b)
    _check_search(trials, draws, max_stages)
    _at_least("--splits", splits)
    if not 0 < holdout < 1:
        raise UserError(f"--holdout: must be a fraction strictly between 0 and 1, got {holdout}")
    rules = selections or ("best",)
    cs = _load(calib)
    _stages_fit(cs, max_stages)
    rows = holdout_regret(cs, list(budgets), holdout=holdout, seed=seed, trials=trials, draws=draws,
                          max_stages=max_stages, splits=splits, selections=rules)
    lines = [f"{'split':>5} {'budget':>9} {'rule':>6} {'rec acc':>8} {'oracle':>7} {'regret':>7} {'grid':>6} "
             f"{'vs grid':>7} {'tokens':>9} {'secs':>5}  recommended | held-out oracle"]
    lines += [f"{r.split:>5} {r.budget:>9,.0f} {r.selection:>6} {100 * r.test_accuracy:>8.1f} "
              f"{100 * r.oracle_accuracy:>7.1f} {r.regret_points:>7.2f} {100 * r.grid_choice_test_accuracy:>6.1f} "
              f"{r.regret_vs_grid_points:>7.2f} {r.test_tokens:>9,.0f} {r.search_seconds:>5.1f}  {r.recommended} | {r.oracle}"
              for r in rows]
    summary: dict[str, Any] = {}
    for rule in rules:
        mine = [r for r in rows if r.selection == rule]
        mean = {b: sum(r.regret_points for r in mine if r.budget == b) / splits for b in budgets}
        vs_grid = {b: sum(r.regret_vs_grid_points for r in mine if r.budget == b) / splits for b in budgets}
        summary[rule] = {"mean_regret_points": mean, "mean_regret_vs_grid_points": vs_grid}
        for name, m in (("vs held-out oracle", mean), ("vs exhaustive grid (same training problems)", vs_grid)):
            lines.append(f"[{rule}] mean regret {name} (points): " + ", ".join(f"{b:,.0f}: {v:.2f}" for b, v in m.items())
                         + f"; overall {sum(m.values()) / len(m):.2f}")
    out = {"rows": [r.model_dump() for r in rows], **summary.get("best", {}), "by_selection": summary}
    _emit(as_json, out, "\n".join(lines))


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="the config `recommend` wrote (and the run used)")
@click.option("--results", required=True, type=click.Path(dir_okay=False),
              help="per-problem results of `sglang-stop run --config ... --out FILE`")
@click.option("--calib", "calib", multiple=True, type=click.Path(dir_okay=False),
              help="calibration set of the SAME problems and seed: also check the replay exactly, problem by problem")
@click.option("--unverified", is_flag=True,
              help="accept a results file without a header (an older run's): checked with a warning, since "
                   "it cannot be verified to come from --config")
@click.option("--json", "as_json", is_flag=True)
def check(config_path: str, results: str, calib: tuple[str, ...], unverified: bool, as_json: bool) -> None:
    """Predicted vs measured for a real run of a recommended config (and, with --calib, exactness).
    Results made with another config (n, stages, scorer, vote, sampling, ...) are refused."""
    from sglang_stop.advisor.check import check_exact, check_prediction, load_results, verify_results
    from sglang_stop.config import load_config

    cfg = load_config(config_path)
    run_cfg, notes = verify_results(results, cfg, config_path, allow_unverified=unverified)
    for w in notes:
        warn(w)
    res = load_results(results)
    pred = check_prediction(cfg, res, config_path)
    out: dict[str, Any] = {"prediction": pred.model_dump(), "verified": run_cfg is not None, "warnings": notes}
    lines = [
        f"{pred.problems} problems",
        f"tokens/problem: predicted {pred.predicted_tokens_per_problem:,.1f}, measured {pred.measured_tokens_per_problem:,.1f} "
        f"({100 * pred.tokens_rel_error:+.2f}%; within 5%: {'yes' if pred.tokens_within_5pct else 'NO'})",
        f"accuracy: predicted {100 * pred.predicted_accuracy:.1f}% [{100 * pred.ci_low:.1f}, {100 * pred.ci_high:.1f}], "
        f"measured {100 * pred.measured_accuracy:.1f}% (inside: {'yes' if pred.accuracy_inside_interval else 'NO'})"
        + (f"; interval rescaled from {pred.interval_problems} to {pred.problems} problems"
           if pred.interval_problems and pred.interval_problems != pred.problems else ""),
    ]
    if calib:
        ex = check_exact(list(calib), run_cfg or cfg, res)  # the run's own seed
        out["exact"] = ex.model_dump()
        lines.append(
            f"exact replay of the first N recorded paths: tokens/problem {ex.replayed_tokens_per_problem:,.2f} vs "
            f"{ex.measured_tokens_per_problem:,.2f}, accuracy {100 * ex.replayed_accuracy:.2f}% vs "
            f"{100 * ex.measured_accuracy:.2f}%; problems differing: tokens {ex.token_mismatches}, "
            f"answer {ex.answer_mismatches}" + (f" ({', '.join(ex.mismatched_ids)})" if ex.mismatched_ids else ""))
    _emit(as_json, out, "\n".join(lines))


@main.command()
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="JSONL to write")
@click.option("--problems", default=30, show_default=True)
@click.option("--preset", type=click.Choice(["paper", "testbed"]), default="paper", show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def synth(out: str, problems: int, preset: str, seed: int, as_json: bool) -> None:
    """Write a synthetic calibration set (a demo and test fixture; not a measurement)."""
    from sglang_stop.advisor.synthetic import write_synthetic

    _at_least("--problems", problems)
    n = write_synthetic(out, problems, preset=preset, seed=seed)
    _emit(as_json, {"out": out, "problems": n, "preset": preset}, f"wrote {n} synthetic problems to {out}")


if __name__ == "__main__":
    main()
