"""The committed calibration sets (advisor/data/, recorded by `sglang-stop calibrate` on the real runtime)
validate against the schema, stay small, and give configs the runtime loads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from sglang_stop.advisor.calibration import load_calibration
from sglang_stop.advisor.cli import main
from sglang_stop.config import RuntimeConfig, load_config

DATA = Path(__file__).resolve().parents[1] / "advisor" / "data"

# file, model path, task, problems, prune points, scorers, a budget (tokens/problem) for recommend
SETS = [
    ("testbed-calib.jsonl.gz", "sglang_stop/assets/testbed", "testbed", 400, [8, 12, 16, 22],
     ["confidence", "entropy", "stop"], 200),
    ("smollm2-calib.jsonl.gz", None, "default", 60, [16, 32, 64], ["confidence", "entropy"], 900),
]


@pytest.mark.parametrize("name, model, task, problems, lens, scorers, budget", SETS)
def test_committed_set_validates_and_recommends(name, model, task, problems, lens, scorers, budget, tmp_path):
    f = DATA / name
    assert f.stat().st_size < 512 * 1024
    cs = load_calibration(f)  # every record validated by CalibRecord
    assert cs.n_problems == problems and cs.n_max == 16
    assert cs.prefix_lens == lens and sorted(cs.scorers) == scorers
    rec = cs.records[0]
    assert rec.task == task and rec.model.path == model and rec.seed == 0
    assert {r.seed for r in cs.records} == {0} and len({r.problem_id for r in cs.records}) == problems
    assert 0 < cs.lengths.mean() < rec.sampling.max_new_tokens

    out = tmp_path / "rec.yaml"
    r = CliRunner().invoke(main, ["recommend", "--calib", str(f), "--budget", str(budget), "--out", str(out),
                                  "--trials", "15", "--draws", "8", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["tokens"] <= budget
    cfg = load_config(out)  # the runtime's own loader
    assert isinstance(cfg, RuntimeConfig)
    assert cfg.task == task and cfg.sampling == rec.sampling
    assert _same_path(cfg.model.path, model)  # the records' paths are relative to the repository root (cwd)
    assert cfg.metadata["predicted_tokens_per_problem"] <= budget and cfg.metadata["calib_problems"] == problems
    if cfg.scorer.name == "stop":
        assert _same_path(cfg.scorer.options["checkpoint"], "sglang_stop/assets/testbed-stop")
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(yaml.safe_load(out.read_text()), RuntimeConfig.model_json_schema())


def _same_path(got: str | None, want: str | None) -> bool:
    """A config file's paths may be written relative to the file (sglang_stop.config.dump_config)."""
    if got is None or want is None:
        return got == want
    return os.path.abspath(got) == os.path.abspath(want)
