"""Every command and subcommand of both CLIs runs on the tiny testbed model (exit 0) and its --json
output parses. A new command without a recipe here fails the coverage test, so none goes untried."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from tests.battery import ROOT, TESTBED, TESTBED_STOP, run_cli

CALIB = ROOT / "advisor" / "data" / "testbed-calib.jsonl.gz"
TB = ["--model", str(TESTBED), "--task", "testbed"]

# command path -> argv after it ({tmp}: a shared work dir; steps run in this order, later ones read earlier files)
RECIPES: dict[str, list[str]] = {
    "sglang-stop schema": [],
    "sglang-stop run": [*TB, "--problems", "3", "--n", "4", "--prefix-len", "8", "--keep", "2", "--scorer", "stop",
                        "--checkpoint", str(TESTBED_STOP), "--max-new-tokens", "48", "--out", "{tmp}/run.jsonl"],
    "sglang-stop report": ["{tmp}/run.jsonl", "--png", "{tmp}/report.png"],
    "sglang-stop calibrate": [*TB, "--problems", "3", "--n-max", "4", "--prefix-lens", "8,12", "--max-new-tokens",
                              "48", "--out", "{tmp}/calib.jsonl"],
    "sglang-stop label": ["--model", str(TESTBED), "--task", "testbed", "--problems", "4", "-P", "2", "-K", "2",
                          "--prefix-len", "8", "--max-new-tokens", "48", "--out", "{tmp}/labels.jsonl"],
    "sglang-stop train": ["--model", str(TESTBED), "--labels", "{tmp}/labels.jsonl", "--out", "{tmp}/ckpt",
                          "--epochs", "1", "--k", "2", "--lora-r", "2", "--val-fraction", "0.5"],
    "sglang-stop train-verifier": ["--labels", "{tmp}/labels.jsonl", "--out", "{tmp}/verifier", "--epochs", "1",
                                   "--lora-r", "2", "--val-fraction", "0.5"],
    "sglang-stop train-reasoner": ["--out", "{tmp}/reasoner", "--steps", "1", "--train-problems", "2",
                                   "--batch-size", "2", "--threads", "1"],
    "sglang-stop bench signals": ["--labels", "{tmp}/labels.jsonl", "--keep", "1,2", "--online",
                                  '{{"warmup": 1, "window": 4}}', "--png", "{tmp}/signals.png"],
    "sglang-stop bench pipeline": [*TB, "--problems", "2", "--n", "4", "--prefix-len", "8", "--keep", "2",
                                   "--max-new-tokens", "48"],
    "sglang-stop bench compare": ["--problems", "4", "--n", "4", "--prefix-len", "8", "--keep", "2",
                                  "--max-new-tokens", "48", "--scorers", "none,random,confidence,stop,verifier",
                                  "--online", '{{"warmup": 2, "window": 4}}'],
    "sglang-stop bench verifier": ["--batch", "2", "--repeats", "1", "--tokens", "12"],
    "sglang-stop bench decode": ["--model", str(TESTBED), "--branches", "1,4", "--tokens", "8"],
    "sglang-stop bench scoring": ["--model", str(TESTBED), "--prefix-lens", "16,32", "--batch", "4", "--repeats", "1",
                                  "--checkpoint", str(TESTBED_STOP)],
    "stop-advise guideline": ["--budget", "161792", "--prefix-len", "2048", "--task-len", "8650"],
    "stop-advise synth": ["--out", "{tmp}/synth.jsonl", "--problems", "20"],
    "stop-advise replay": ["--calib", str(CALIB), "--n", "8", "--stage", "8:2", "--scorer", "stop", "--draws", "8"],
    "stop-advise fit": ["--calib", str(CALIB), "--out", "{tmp}/constants.json"],
    "stop-advise pareto": ["--calib", str(CALIB), "--trials", "8", "--draws", "8", "--max-stages", "1"],
    "stop-advise recommend": ["--calib", str(CALIB), "--budget", "300", "--trials", "8", "--draws", "8",
                              "--max-stages", "1", "--out", "{tmp}/rec.yaml"],
    "stop-advise check": ["--config", "{tmp}/rec.yaml", "--results", "{tmp}/rec-run.jsonl", "--calib", str(CALIB)],
    "stop-advise regret": ["--calib", str(CALIB), "--budget", "300", "--trials", "4", "--draws", "8",
                           "--max-stages", "1", "--splits", "1"],
    "stop-advise plot": ["--calib", str(CALIB), "--out", "{tmp}/plot.png", "--draws", "8", "--max-stages", "1"],
}
NO_JSON = {"sglang-stop schema"}  # prints the JSON Schema itself
# a long-running server: started, asked and stopped by tests/test_serve.py::test_the_command_serves_and_stops_on_sigterm
ELSEWHERE = {"sglang-stop serve"}


def all_commands() -> list[str]:
    from sglang_stop.advisor.cli import main as advise
    from sglang_stop.cli import cli

    out: list[str] = []

    def walk(group: click.Group, prefix: str) -> None:
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                walk(cmd, f"{prefix} {name}")
            else:
                out.append(f"{prefix} {name}")

    walk(cli, "sglang-stop")
    walk(advise, "stop-advise")
    return sorted(out)


def test_every_command_has_a_recipe():
    assert sorted(set(RECIPES) | ELSEWHERE) == all_commands()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("walk")


def _run(cmd: str, work: Path, extra: list[str]) -> str:
    prog, *sub = cmd.split()
    argv = [prog, *sub, *[a.format(tmp=work) for a in RECIPES[cmd]], *extra]
    r = run_cli(argv, timeout=600)
    assert r.returncode == 0, (cmd, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return r.stdout


@pytest.mark.parametrize("cmd", list(RECIPES))
def test_command_runs_and_json_parses(cmd, work):
    if cmd == "stop-advise check":  # results of the recommended config, run for real
        _run_rec(work)
    out = _run(cmd, work, [] if cmd in NO_JSON else ["--json"])
    json.loads(out)
    if cmd not in NO_JSON:
        assert out.strip().count("\n") == 0, f"{cmd} --json printed more than one line: {out[:500]}"


def _run_rec(work: Path) -> None:
    r = run_cli(["sglang-stop", "run", "--config", str(work / "rec.yaml"), *TB, "--problems", "3", "--out",
                 str(work / "rec-run.jsonl"), "--max-new-tokens", "64"], timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.parametrize("cmd", ["sglang-stop run", "sglang-stop bench pipeline", "stop-advise replay"])
def test_human_output_is_a_summary_not_json(cmd, work):
    extra = ["--out", str(work / "run2.jsonl")] if cmd == "sglang-stop run" else []
    prog, *sub = cmd.split()
    args = [a.format(tmp=work) for a in RECIPES[cmd]]
    if cmd == "sglang-stop run":
        args = args[: args.index("--out")]
    r = run_cli([prog, *sub, *args, *extra], timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not r.stdout.lstrip().startswith("{"), r.stdout[:300]
    assert "accuracy" in r.stdout
