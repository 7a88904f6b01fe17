"""`sglang-stop report`: the click command over :mod:`sglang_stop.report` (the main CLI adds it with
``cli.add_command(report_cmd, "report")``). Every argument is checked before the files are summarised
or a figure is drawn; errors are :class:`UserError` lines (exit 2 through the CLI's ``main``)."""

from __future__ import annotations

import json

import click

from sglang_stop.errors import warn


@click.command("report")
@click.argument("results", nargs=-1, type=click.Path())
@click.option("--problem", "problem_id", default=None, help="show this problem path by path (its problem_id)")
@click.option("--png", "png", type=click.Path(), default=None, help="write accuracy vs tokens per problem (PNG)")
@click.option("--boot", default=2000, show_default=True, help="bootstrap resamples for the 95% intervals")
@click.option("--seed", default=0, show_default=True, help="bootstrap seed (same files + seed = same intervals)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object on stdout")
def report_cmd(results: tuple[str, ...], problem_id: str | None, png: str | None, boot: int, seed: int,
               as_json: bool) -> None:
    """Summarise one or more `sglang-stop run --out` files: accuracy with a paired 95% bootstrap
    interval, tokens per problem, pruned share and per-path accuracy; a table across runs."""
    from sglang_stop import report as rp

    rp.check_boot(boot)
    if png is not None:
        rp.check_png_path(png)
    runs = rp.load_runs(results)
    rep = rp.build_report(runs, boot=boot, seed=seed)
    warnings = list(rep.warnings)
    views: list[rp.ProblemView] = []
    if problem_id is not None:
        views, missing = rp.problem_views(runs, problem_id)
        warnings += missing
    if png is not None:
        rp.write_png(rep, png)
    for w in warnings:
        warn(w)
    if as_json:
        obj = rep.model_dump(mode="json")
        if problem_id is not None:
            obj["problem"] = [v.model_dump(mode="json") for v in views]
        if png is not None:
            obj["png"] = png
        click.echo(json.dumps(obj))
        return
    if views:
        click.echo("\n\n".join(rp.format_problem(v) for v in views))
    else:
        click.echo(rp.format_report(rep))
    if png is not None:
        click.echo(f"wrote {png}")


def main(argv: list[str] | None = None) -> None:
    """Stand-alone entry (``python -m sglang_stop.report_cli``) under the CLIs' one error policy."""
    from sglang_stop.cli_errors import run_cli_group

    run_cli_group(report_cmd, argv)


if __name__ == "__main__":
    main()
