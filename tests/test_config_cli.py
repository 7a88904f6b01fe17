"""Config validation and the CLI's user-error contract: one line naming the problem, exit 2, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from sglang_stop.config import ConfigError, RuntimeConfig, config_from_dict, dump_config, load_config

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sglang_stop.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")) + [ROOT / "sglang_stop/assets/default.yaml"])
def test_shipped_configs_validate_against_schema(path):
    data = yaml.safe_load(path.read_text())
    jsonschema.validate(data, RuntimeConfig.model_json_schema())
    load_config(path)


def test_packaged_default_matches_configs_default():
    assert load_config(ROOT / "configs/default.yaml") == load_config(ROOT / "sglang_stop/assets/default.yaml")


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"n": 4, "stages": [{"prefix_len": 8, "keep": 5}]}, "stages.0.keep: 5 exceeds the 4 paths alive"),
        ({"stages": [{"prefix_len": -3, "keep": 2}]}, "stages.0.prefix_len"),
        ({"stages": [{"prefix_len": 8}]}, "exactly one of 'keep' or 'keep_ratio'"),
        ({"stages": [{"prefix_len": 8, "keep": 4}, {"prefix_len": 8, "keep": 2}]}, "stages.1.prefix_len"),
        ({"n": 8, "stages": [{"prefix_len": 8, "keep": 4}, {"prefix_len": 16, "keep": 6}]}, "stages.1.keep: 6 exceeds"),
        ({"sampling": {"top_k": 0}}, "sampling.top_k"),
        ({"sampling": {"temprature": 0.5}}, "sampling.temprature"),
        ({"stages": [{"prefix_len": 300, "keep": 2}]}, "below sampling.max_new_tokens"),
    ],
)
def test_bad_config_names_the_field(data, fragment):
    with pytest.raises(ConfigError) as e:
        config_from_dict(data, "x.yaml")
    assert fragment in str(e.value) and str(e.value).startswith("x.yaml:")


def test_yaml_syntax_error_names_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("n: 4\nstages:\n  - prefix_len: 8\n   keep: [\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:\d+: invalid YAML"):
        load_config(p)


def test_dump_is_atomic_and_round_trips(tmp_path):
    cfg = config_from_dict({"n": 6, "stages": [{"prefix_len": 4, "keep_ratio": 0.5}], "scorer": {"name": "random"}})
    dump_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert [p.name for p in tmp_path.iterdir()] == ["c.yaml"]  # no temp file left behind


def test_keep_ratio_rounds_up_and_never_drops_all():
    cfg = config_from_dict({"n": 10, "stages": [{"prefix_len": 4, "keep_ratio": 0.25}, {"prefix_len": 8, "keep_ratio": 0.01}],
                            "scorer": {"name": "random"}})
    assert cfg.alive_after_stages() == [3, 1]


def test_schema_command_prints_the_json_schema():
    r = cli("schema")
    assert r.returncode == 0
    assert json.loads(r.stdout) == RuntimeConfig.model_json_schema()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", "--task", "no_such_task"], "unknown task 'no_such_task'"),
        (["run", "--model", "/nonexistent/model"], "/nonexistent/model"),
        (["run", "--n", "4", "--prefix-len", "8", "--keep", "9"], "stages.0.keep: 9 exceeds the 4 paths alive"),
        (["run", "--prefix-len", "-5", "--keep", "2"], "prefix"),  # click range check or stages.0.prefix_len
        (["run", "--scorer", "nope"], "unknown scorer 'nope'"),
        (["run", "--config", "configs/missing.yaml"], "configs/missing.yaml: config file not found"),
        (["bench", "compare", "--scorers", "none,logprob", "--scorer-options", "entropy={}"], "NAME one of --scorers"),
        (["bench", "compare", "--scorers", "logprob", "--scorer-options", "logprob={window: 1}"], "logprob: not JSON"),
        (["bench", "compare", "--scorers", "logprob", "--scorer-options", "logprob=[1]"], "expected a JSON object"),
    ],
)
def test_cli_user_errors_are_one_line_without_traceback(args, fragment, tmp_path):
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    assert fragment in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0


def test_cli_malformed_config_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("n: 4\nscorer: {name: confidence, options: {top_k: 0}}\n")
    r = cli("run", "--config", str(p), "--task", "chain_sum")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "scorer.options.top_k" in r.stderr
