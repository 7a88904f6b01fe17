from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from advisor.cli import main
from advisor.synthetic import write_synthetic
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


def test_check_reports_predicted_vs_measured(tmp_path):
    from sglang_stop.config import dump_config
    from sglang_stop.runner import ProblemResult

    cfg = RuntimeConfig(n=2, metadata={"predicted_tokens_per_problem": 100.0, "predicted_accuracy": 0.5,
                                       "ci_low": 0.2, "ci_high": 0.8})
    dump_config(cfg, tmp_path / "rec.yaml")
    res = [ProblemResult(problem_id=f"p{i}", question="q", gold="1", predicted="1" if i else "2", correct=bool(i),
                         tokens=t, paths=[], path_correct=[]) for i, t in enumerate((90, 120))]
    (tmp_path / "run.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in res))
    r = _run("check", "--config", tmp_path / "rec.yaml", "--results", tmp_path / "run.jsonl", "--json")
    assert r.exit_code == 0, r.output
    pred = json.loads(r.stdout)["prediction"]
    assert pred["measured_tokens_per_problem"] == 105 and abs(pred["tokens_rel_error"] - 0.05) < 1e-12
    assert pred["tokens_within_5pct"] and pred["measured_accuracy"] == 0.5 and pred["accuracy_inside_interval"]
    dump_config(RuntimeConfig(n=2), tmp_path / "plain.yaml")
    r = _run("check", "--config", tmp_path / "plain.yaml", "--results", tmp_path / "run.jsonl")
    assert r.exit_code == 2 and "metadata.predicted_tokens_per_problem missing" in r.output
