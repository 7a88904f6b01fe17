"""Config validation and the CLI's user-error contract: one line naming the problem, exit 2, no traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

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


# ------------------------------------------------------------------------------------------------
# issues 12 / 17: duplicate keys, unreadable files, strict types, placeholders, silent drops, paths


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("n: 4\nseed: 1\nn: 8\n", "c.yaml:3: invalid YAML: key 'n' given twice (first at line 1)"),
        ("sampling:\n  top_k: 5\n  temperature: 1.0\n  top_k: 6\n", "c.yaml:4: invalid YAML: key 'top_k' given twice (first at line 2)"),
        ("scorer: {name: confidence, name: entropy}\n", "c.yaml:1: invalid YAML: key 'name' given twice"),
    ],
)
def test_duplicate_yaml_key_names_key_and_line(tmp_path, text, fragment):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(f"{tmp_path}/{fragment}"), str(e.value)


def test_yaml_merge_keys_and_repeated_stage_keys_are_fine(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("sampling:\n  <<: {temperature: 0.5, top_k: 5}\n  top_k: 7\n")  # a merge override, not a duplicate
    assert load_config(p).sampling.top_k == 7
    p.write_text("n: 8\nscorer: {name: random}\nstages:\n  - {prefix_len: 4, keep: 4}\n  - {prefix_len: 8, keep: 2}\n")
    assert [s.keep for s in load_config(p).stages] == [4, 2]


def test_duplicate_json_key_names_key_and_line(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('{\n  "n": 4,\n  "sampling": {"top_k": 5,\n               "top_k": 6}\n}\n')
    with pytest.raises(ConfigError, match=r"c\.json:4: invalid JSON: key 'top_k' given twice \(first at line 3\)"):
        load_config(p)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "a binary file, not a YAML or JSON config"),
        (b"n: 4\nprompt: caf\xe9 {question}\n", ":2: not UTF-8 text (byte 0xe9)"),
    ],
)
def test_unreadable_config_files_are_one_line(tmp_path, raw, fragment):
    p = tmp_path / "c.yaml"
    p.write_bytes(raw)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(str(p)) and fragment in str(e.value) and "\n" not in str(e.value)


def test_directory_and_empty_config(tmp_path):
    with pytest.raises(ConfigError, match="a directory, not a config file"):
        load_config(tmp_path)
    (tmp_path / "e.yaml").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="top level must be a mapping, got an empty file"):
        load_config(tmp_path / "e.yaml")


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"n": True}, "n: Input should be a valid integer (got true)"),
        ({"n": 4.0}, "n: Input should be a valid integer (got 4.0)"),
        ({"n": "4"}, "n: Input should be a valid integer (got \"4\")"),
        ({"seed": False}, "seed: Input should be a valid integer"),
        ({"sampling": {"max_new_tokens": 64.0}}, "sampling.max_new_tokens: Input should be a valid integer"),
        ({"sampling": {"temperature": "0.7"}}, "sampling.temperature: Input should be a valid number"),
        ({"sampling": {"temperature": True}}, "sampling.temperature: Input should be a valid number"),
        ({"chat_template": 1}, "chat_template: Input should be a valid boolean (got 1)"),
        ({"chat_template": "yes"}, "chat_template: Input should be a valid boolean"),
        ({"consensus": {"votes": True}}, "consensus.votes: Input should be a valid integer"),
        ({"stages": [{"prefix_len": 8, "keep": True}], "scorer": {"name": "random"}}, "stages.0.keep: Input should be a valid integer"),
        ({"task": 3}, "task: Input should be a valid string (got 3)"),
    ],
)
def test_types_are_strict(data, fragment):
    with pytest.raises(ConfigError) as e:
        config_from_dict(data, "x.yaml")
    assert fragment in str(e.value), str(e.value)


def test_ints_still_fill_float_fields():
    assert config_from_dict({"sampling": {"temperature": 1, "top_p": 1}}).sampling.temperature == 1.0


@pytest.mark.parametrize(
    "prompt, fragment",
    [
        ("Q: {question} {bogus}", "prompt: unknown placeholder '{bogus}'"),
        ("{question} \\boxed{}", "prompt: unknown placeholder '{}'"),
        ("{question} {", "prompt: Single '{' encountered"),
        ("no question here", "prompt: must contain '{question}'"),
    ],
)
def test_prompt_placeholders(prompt, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        config_from_dict({"prompt": prompt}, "x.yaml")


def test_prompt_literal_braces_are_doubled():
    cfg = config_from_dict({"prompt": "{question} \\boxed{{}}"})
    assert cfg.prompt.format(question="Q") == "Q \\boxed{}"


def test_consensus_votes_above_n():
    with pytest.raises(ConfigError, match=r"consensus\.votes: 9 exceeds n \(8\)"):
        config_from_dict({"n": 8, "consensus": {"votes": 9}}, "x.yaml")
    assert config_from_dict({"n": 8, "consensus": {"votes": 8}}).consensus.votes == 8


def test_stages_with_scorer_none_are_refused_for_user_input():
    for data in ({"stages": [{"prefix_len": 8, "keep": 4}]},  # scorer left at its default: none
                 {"stages": [{"prefix_len": 8, "keep_ratio": 0.5}], "scorer": {"name": "none"}}):
        with pytest.raises(ConfigError, match=r"x\.yaml: stages: scorer 'none' never prunes"):
            config_from_dict(data, "x.yaml")
    with pytest.raises(ValidationError, match="never prunes"):  # named in Python too
        RuntimeConfig(stages=[{"prefix_len": 8, "keep": 4}], scorer={"name": "none"})
    # stages that keep every path drop nothing (calibration records scores this way)
    assert len(config_from_dict({"n": 4, "stages": [{"prefix_len": 8, "keep_ratio": 1.0}, {"prefix_len": 9, "keep": 4}]}).stages) == 2
    # internal use: a Python caller passes its scorer object separately and leaves scorer at the default
    assert RuntimeConfig(n=4, stages=[{"prefix_len": 3, "keep": 1}]).scorer.name == "none"


def test_several_errors_are_one_line():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"n": True, "seed": "x", "sampling": {"top_k": 0}}, "x.yaml")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("x.yaml: ") and msg.count("x.yaml") == 1
    assert "n: " in msg and "; seed: " in msg and "sampling.top_k" in msg


def _files(root: Path) -> None:
    (root / "m").mkdir(parents=True)
    (root / "ck").mkdir()
    (root / "p.jsonl").write_text('{"question": "q", "answer": "1"}\n')


def test_paths_are_relative_to_the_config_file(tmp_path, monkeypatch):
    conf = tmp_path / "confs"
    _files(conf)
    (conf / "c.yaml").write_text(
        "model: {path: m}\ntask: p.jsonl\nscorer: {name: stop, options: {checkpoint: ck}}\n"
        "stages: [{prefix_len: 4, keep: 2}]\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config("../confs/c.yaml")
    assert cfg.model.path == str(conf / "m") and cfg.task == str(conf / "p.jsonl")
    assert cfg.scorer.options["checkpoint"] == str(conf / "ck")
    # absolute paths, the embedded default (null) and non-file tasks are left alone
    (conf / "d.yaml").write_text(f"model: {{path: {conf / 'm'}}}\ntask: chain_sum:min_terms=2\n")
    d = load_config(conf / "d.yaml")
    assert d.model.path == str(conf / "m") and d.task == "chain_sum:min_terms=2"
    (conf / "e.yaml").write_text("n: 2\n")
    assert load_config(conf / "e.yaml").model.path is None
    (conf / "f.yaml").write_text("task: mix:p.jsonl,chain_sum:min_terms=2,max_terms=2\n")
    assert load_config(conf / "f.yaml").task == f"mix:{conf / 'p.jsonl'},chain_sum:min_terms=2,max_terms=2"
    # config_from_dict (the command line) keeps the process's meaning
    assert config_from_dict({"model": {"path": "m"}}).model.path == "m"


def test_path_only_relative_to_the_cwd_is_refused(tmp_path, monkeypatch):
    _files(tmp_path)
    (tmp_path / "confs").mkdir()
    (tmp_path / "confs" / "c.yaml").write_text("model: {path: m}\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"confs/c\.yaml: model\.path: 'm' is relative to the config file's directory"):
        load_config("confs/c.yaml")
    (tmp_path / "confs" / "c.yaml").write_text("model: {path: nowhere}\n")  # missing everywhere: the loader says so later
    assert load_config("confs/c.yaml").model.path == str(tmp_path / "confs" / "nowhere")


def test_shipped_testbed_config_works_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(ROOT / "configs" / "testbed.yaml")
    assert Path(cfg.model.path) == ROOT / "sglang_stop" / "assets" / "testbed"
    assert Path(cfg.scorer.options["checkpoint"]) == ROOT / "sglang_stop" / "assets" / "testbed-stop"


def test_dump_rewrites_relative_paths_for_the_file(tmp_path, monkeypatch):
    _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    cfg = config_from_dict({"model": {"path": "m"}, "task": "p.jsonl", "scorer": {"name": "stop", "options": {"checkpoint": "ck"}}})
    (tmp_path / "out").mkdir()
    dump_config(cfg, tmp_path / "out" / "c.yaml")  # outside the file's directory: absolute
    written = yaml.safe_load((tmp_path / "out" / "c.yaml").read_text())
    assert written["model"]["path"] == str(tmp_path / "m") and written["scorer"]["options"]["checkpoint"] == str(tmp_path / "ck")
    dump_config(cfg, tmp_path / "c.json")  # below the file's directory: relative to it
    assert json.loads((tmp_path / "c.json").read_text())["task"] == "p.jsonl"
    for f in (tmp_path / "out" / "c.yaml", tmp_path / "c.json"):
        back = load_config(f)
        assert back.model.path == str(tmp_path / "m") and back.task == str(tmp_path / "p.jsonl")
