"""No command declares an option it ignores: every option's parameter is read in its command's body
(the old `calibrate --prefix-len/--keep/--scorer` were accepted and silently dropped)."""

from __future__ import annotations

import ast
import inspect
import textwrap

import click
import pytest

from tests.test_cli_walk import all_commands


def command(path: str) -> click.Command:
    from sglang_stop.advisor.cli import main as advise
    from sglang_stop.cli import cli

    prog, *parts = path.split()
    cmd: click.Command = cli if prog == "sglang-stop" else advise
    for p in parts:
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[p]
    return cmd


def body_names(fn) -> set[str]:
    """Names read in the function body (not its signature), following decorators' wrapped functions."""
    fn = inspect.unwrap(fn)
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    f = tree.body[0]
    assert isinstance(f, ast.FunctionDef)
    names = {n.id for stmt in f.body for n in ast.walk(stmt) if isinstance(n, ast.Name)}
    # a body that hands its whole locals()/kwargs on counts every parameter as read
    if "locals" in names or (f.args.kwarg is not None and f.args.kwarg.arg in names):
        names |= {a.arg for a in f.args.args + f.args.kwonlyargs}
    return names


@pytest.mark.parametrize("path", all_commands())
def test_every_option_is_used(path):
    cmd = command(path)
    if cmd.callback is None:
        pytest.skip("no callback")
    used = body_names(cmd.callback)
    params = [p for p in cmd.params if isinstance(p, (click.Option, click.Argument)) and p.name and p.expose_value]
    unused = [p.opts[0] for p in params if p.name not in used]
    assert not unused, f"{path}: options declared but never read: {unused}"


def test_the_check_catches_an_ignored_option():
    @click.command()
    @click.option("--used")
    @click.option("--ignored")
    def demo(used, ignored):
        print(used)

    used = body_names(demo.callback)
    assert "used" in used and "ignored" not in used
