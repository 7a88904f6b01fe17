from __future__ import annotations

import json
import re
import time

import pytest
from click.testing import CliRunner

from sglang_stop.advisor.cli import main
from sglang_stop.advisor.synthetic import write_synthetic
from sglang_stop.config import RuntimeConfig, load_config


@pytest.fixture(scope="module")
def paper_set(tmp_path_factory):
    """Realistic size: 30 problems x 64 paths x 3 scorers x 4 prune points (like AIME24 at N=64)."""
    f = tmp_path_factory.mktemp("calib") / "paper.jsonl"
    write_synthetic(f, 30, preset="paper", seed=0)
    return f


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    f = tmp_path_factory.mktemp("calib") / "testbed.jsonl"
    write_synthetic(f, 8, preset="testbed", seed=1)
    return f


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_recommend_realistic_size_fast_and_valid(paper_set, tmp_path):
    out = tmp_path / "rec.yaml"
    t0 = time.perf_counter()
    r = _run("recommend", "--calib", paper_set, "--budget", 150_000, "--out", out, "--json")
    elapsed = time.perf_counter() - t0
    assert r.exit_code == 0, r.output
    assert elapsed < 60
    info = json.loads(r.stdout)
    assert info["tokens"] <= 150_000
    cfg = load_config(out)  # the runtime's own loader
    meta = cfg.metadata
    for k in ("predicted_accuracy", "ci_low", "ci_high", "predicted_tokens_per_problem", "budget", "calib", "advisor_version"):
        assert k in meta, k
    assert meta["ci_low"] <= meta["predicted_accuracy"] <= meta["ci_high"]
    assert meta["budget"] == 150_000 and meta["calib"] == [str(paper_set)]
    # a strong scorer: beats random pruning and the unpruned baseline beyond noise, and says so
    verdicts = {c["baseline"]: c["verdict"] for c in info["noise"]}
    assert verdicts == {"random pruning": "better", "unpruned": "better"} and info["notes"] == []
    assert all(s.keep is not None and s.keep_ratio is None for s in cfg.stages)
    assert cfg.sampling.max_new_tokens == 16384
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    jsonschema.validate(yaml.safe_load(out.read_text()), RuntimeConfig.model_json_schema())


def test_recommend_json_config_and_budget_too_low(small_set, tmp_path):
    out = tmp_path / "rec.json"
    r = _run("recommend", "--calib", small_set, "--budget", 600, "--out", out, "--trials", 40, "--draws", 32)
    assert r.exit_code == 0, r.output
    assert "wrote" in r.stdout
    load_config(out)
    low = _run("recommend", "--calib", small_set, "--budget", 10, "--out", tmp_path / "x.yaml")
    assert low.exit_code == 2
    assert "minimum is" in low.stderr and "tokens per problem" in low.stderr
    assert len(low.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.yaml").exists()


def test_malformed_calibration_line_via_cli(small_set, tmp_path):
    bad = tmp_path / "bad.jsonl"
    lines = small_set.read_text().splitlines()
    bad.write_text(lines[0] + "\n" + lines[1][:-5] + "\n")
    r = _run("replay", "--calib", bad, "--n", 4)
    assert r.exit_code == 2
    assert f"{bad}:2: invalid JSON" in r.stderr


def test_replay_pareto_fit_plot_guideline(small_set, tmp_path):
    r = _run("replay", "--calib", small_set, "--n", 8, "--stage", "64:2", "--scorer", "stop", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["config"]["stages"] == [{"prefix_len": 64, "keep": 2}]
    assert _run("replay", "--calib", small_set, "--n", 8, "--stage", "64").exit_code == 2
    r = _run("pareto", "--calib", small_set, "--trials", 30, "--draws", 16, "--json")
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["front"]) >= 2
    r = _run("pareto", "--calib", small_set, "--exhaustive", "--draws", 16)
    assert r.exit_code == 0 and "tokens/problem" in r.stdout
    k = tmp_path / "k.json"
    r = _run("fit", "--calib", small_set, "--out", k, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["fixed"] == ["d"]
    r = _run("guideline", "--budget", 1000, "--prefix-len", 64, "--task-len", 120, "--constants", k, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["inverse_ratio"] > 0
    png = tmp_path / "p.png"
    r = _run("plot", "--calib", small_set, "--out", png, "--draws", 8, "--json")
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _results(path, run_cfg: RuntimeConfig | None, tokens=(90, 120), task="testbed", model=None):
    """A results file as `sglang-stop run --out` writes it: a run-results header, then one line per problem."""
    from sglang_stop.io import RecordHeader
    from sglang_stop.runner import ProblemResult

    res = [ProblemResult(problem_id=f"p{i}", question="q", gold="1", predicted="1" if i else "2", correct=bool(i),
                         tokens=t, paths=[], path_correct=[]) for i, t in enumerate(tokens)]
    head = ""
    if run_cfg is not None:
        h = RecordHeader(kind="run-results", settings={"config": run_cfg.model_dump(mode="json"), "task": task},
                         model=model or {})
        head = json.dumps({"header": h.model_dump(mode="json")}) + "\n"
    path.write_text(head + "".join(r.model_dump_json() + "\n" for r in res))
    return path


META = {"predicted_tokens_per_problem": 100.0, "predicted_accuracy": 0.5, "ci_low": 0.2, "ci_high": 0.8}


def test_check_reports_predicted_vs_measured(tmp_path):
    from sglang_stop.config import dump_config

    cfg = RuntimeConfig(n=2, metadata=META)
    dump_config(cfg, tmp_path / "rec.yaml")
    _results(tmp_path / "run.jsonl", cfg)
    r = _run("check", "--config", tmp_path / "rec.yaml", "--results", tmp_path / "run.jsonl", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["verified"] is True
    pred = json.loads(r.stdout)["prediction"]
    assert pred["measured_tokens_per_problem"] == 105 and abs(pred["tokens_rel_error"] - 0.05) < 1e-12
    assert pred["tokens_within_5pct"] and pred["measured_accuracy"] == 0.5 and pred["accuracy_inside_interval"]
    dump_config(RuntimeConfig(n=2), tmp_path / "plain.yaml")
    r = _run("check", "--config", tmp_path / "plain.yaml", "--results", tmp_path / "run.jsonl")
    assert r.exit_code == 2 and "metadata.predicted_tokens_per_problem missing" in r.output


@pytest.mark.parametrize("run_over, fragment", [
    ({"n": 4}, "results were made with n=4, the config has n=16"),
    ({"stages": [{"prefix_len": 8, "keep": 2}]}, "results were made with stages=[8:2], the config has stages=[8:4]"),
    ({"scorer": {"name": "confidence"}}, "results were made with scorer.name=confidence, the config has scorer.name=entropy"),
    ({"scorer": {"name": "entropy", "options": {"window": 4}}}, "scorer.options={\"window\":4}"),
    ({"aggregation": {"method": "weighted"}}, "aggregation="),
    ({"consensus": {"votes": 3}}, "consensus="),
    ({"sampling": {"temperature": 0.3}}, "sampling="),
    ({"prompt": "Solve: {question}"}, "prompt=Solve: {question}"),
])
def test_check_refuses_results_of_another_config(tmp_path, run_over, fragment):
    """Before: results of n=4 confidence checked against a recommended n=16 entropy gave exit 0."""
    from sglang_stop.config import dump_config

    rec = RuntimeConfig(n=16, stages=[{"prefix_len": 8, "keep": 4}], scorer={"name": "entropy"}, metadata=META)
    dump_config(rec, tmp_path / "rec.yaml")
    run = RuntimeConfig.model_validate({**rec.model_dump(), **run_over})
    _results(tmp_path / "run.jsonl", run)
    r = _run("check", "--config", tmp_path / "rec.yaml", "--results", tmp_path / "run.jsonl")
    assert r.exit_code == 2
    assert fragment in r.stderr and str(tmp_path / "run.jsonl") in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_check_task_model_and_unverified_results(tmp_path):
    from sglang_stop.config import dump_config

    rec = RuntimeConfig(n=2, task="testbed", metadata={**META, "calib_model": {"name": "m", "weights_hash": "aa"}})
    dump_config(rec, tmp_path / "rec.yaml")
    args = ("check", "--config", tmp_path / "rec.yaml", "--results", tmp_path / "run.jsonl")
    _results(tmp_path / "run.jsonl", rec, task="chain_sum")
    r = _run(*args)
    assert r.exit_code == 2 and "made on task=chain_sum, the config has task=testbed" in r.stderr
    _results(tmp_path / "run.jsonl", rec, model={"name": "m", "weights_hash": "bb"})
    r = _run(*args)
    assert r.exit_code == 2 and "made with model" in r.stderr
    _results(tmp_path / "run.jsonl", rec, model={"name": "m", "weights_hash": "aa"})
    assert _run(*args).exit_code == 0
    _results(tmp_path / "run.jsonl", None)  # an older file: no header
    r = _run(*args)
    assert r.exit_code == 2 and "has no header record" in r.stderr and "--unverified" in r.stderr
    r = _run(*args, "--unverified", "--json")
    assert r.exit_code == 0 and "warning:" in r.stderr and "cannot be verified" in r.stderr
    out = json.loads(r.stdout)
    assert out["verified"] is False and out["warnings"]


def test_check_rescales_the_interval_to_the_run_size(tmp_path):
    from sglang_stop.config import dump_config

    rec = RuntimeConfig(n=2, metadata={**META, "calib_problems": 200, "ci_low": 0.45, "ci_high": 0.55})
    dump_config(rec, tmp_path / "rec.yaml")
    _results(tmp_path / "run.jsonl", rec)  # 2 problems, accuracy 0.5
    r = _run("check", "--config", tmp_path / "rec.yaml", "--results", tmp_path / "run.jsonl", "--json")
    pred = json.loads(r.stdout)["prediction"]
    assert pred["interval_problems"] == 200
    assert pred["ci_low"] == pytest.approx(0.0) and pred["ci_high"] == pytest.approx(1.0)  # 0.05 * sqrt(100)


def test_replay_keeps_later_stages_and_names_dropped_ones(small_set):
    r = _run("replay", "--calib", small_set, "--n", 8, "--stage", "32:4", "--stage", "64:2", "--scorer", "stop", "--json")
    assert r.exit_code == 0, r.output
    cfg = json.loads(r.stdout)["config"]
    assert cfg["stages"] == [{"prefix_len": 32, "keep": 4}, {"prefix_len": 64, "keep": 2}] and cfg["scorer"] == "stop"
    r = _run("replay", "--calib", small_set, "--n", 8, "--stage", "32:8", "--scorer", "stop")
    assert r.exit_code == 0
    assert "warning: --stage 32:8 keeps all 8 paths alive: it prunes nothing and is dropped" in r.stderr
    assert "warning: --scorer stop: no stage prunes" in r.stderr and "scorer=none" in r.stdout
    r = _run("replay", "--calib", small_set, "--n", 8, "--stage", "32:9", "--scorer", "stop")
    assert r.exit_code == 2 and "--stage 32:9: keeps 9 paths, but only 8 are alive" in r.stderr


def test_recommend_says_when_the_choice_is_noise():
    """On the committed SmolLM2 set the robust rule picks random pruning: it must say no scorer beat it."""
    from pathlib import Path

    calib = Path(__file__).resolve().parents[1] / "advisor" / "data" / "smollm2-calib.jsonl.gz"
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        r = _run("recommend", "--calib", calib, "--budget", 1500, "--selection", "robust", "--out", f"{d}/r.yaml")
        assert r.exit_code == 0, r.output
        cfg = load_config(f"{d}/r.yaml")
    assert cfg.scorer.name == "random"
    assert "vs best recorded scorer" in r.stdout and "vs unpruned" in r.stdout
    assert "note: the choice prunes at random" in r.stdout and "no scorer beats random pruning beyond noise" in r.stdout
    assert "note: pruning does not beat the best unpruned policy" in r.stdout
    assert set(cfg.metadata["within_noise_of"]) == {"best recorded scorer", "unpruned"}


def test_every_command_prints_one_json_object(small_set, tmp_path):
    cmds = [
        ("guideline", "--budget", 1000, "--prefix-len", 64, "--task-len", 120),
        ("fit", "--calib", small_set, "--out", tmp_path / "k.json"),
        ("replay", "--calib", small_set, "--n", 4),
        ("recommend", "--calib", small_set, "--budget", 600, "--out", tmp_path / "r.yaml", "--trials", 10, "--draws", 8),
        ("pareto", "--calib", small_set, "--exhaustive", "--draws", 8),
        ("plot", "--calib", small_set, "--out", tmp_path / "p.png", "--draws", 8),
        ("regret", "--calib", small_set, "--budget", 600, "--trials", 10),
        ("synth", "--out", tmp_path / "s.jsonl", "--problems", 2),
    ]
    for c in cmds:
        r = _run(*c, "--json")
        assert r.exit_code == 0, (c, r.output)
        assert isinstance(json.loads(r.stdout), dict) and r.stdout.strip().count("\n") == 0, c
        human = _run(*c)
        assert human.exit_code == 0 and human.stdout.strip() and not human.stdout.lstrip().startswith(("{", "[")), c


def test_plot_ticks_are_plain_tokens_and_points_are_labelled():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sglang_stop.advisor.plots import _token_axis, short_label
    from sglang_stop.advisor.replay import ReplayConfig, Stage

    for lo, hi, want in ((30, 500, {"50", "100", "200", "500"}), (150, 2000, {"200", "500", "1,000", "2,000"}),
                         (1000, 200_000, {"1,000", "10,000", "100,000"})):
        fig, ax = plt.subplots()
        ax.plot([lo, hi], [0, 1])
        _token_axis(ax, lo, hi)
        fig.canvas.draw()
        labels = {t.get_text() for t in ax.get_xticklabels() if t.get_text()}
        assert want <= labels and all(re.fullmatch(r"\d{1,3}(,\d{3})*", t) for t in labels), labels
        plt.close(fig)
    cfg = ReplayConfig(n=16, stages=(Stage(prefix_len=12, keep=4),), scorer="stop", aggregation="weighted")
    assert short_label(cfg) == "N16 12:4 stop w" and short_label(ReplayConfig(n=8)) == "N8"
