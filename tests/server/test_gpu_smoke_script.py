"""scripts/gpu_smoke.sh cannot run without a GPU; what can be checked here is: both files parse, and the
``prepare`` step (random checkpoint, two converted adapters, PEFT reference) works on the tiny model on
CPU, its reference equal to the test suite's own plain-torch reference."""

from __future__ import annotations

import importlib.util
import json
import subprocess

import tiny
from conftest import ROOT
from sglang_stop.srt.convert import load_stop_adapter

SCRIPT = ROOT / "scripts" / "gpu_smoke.sh"


def test_smoke_script_parses_and_refuses_bad_arguments(tmp_path):
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.startswith("usage:")
    r = subprocess.run(["bash", str(SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "no config.json" in r.stderr


def test_prepare_on_cpu_matches_the_reference(tmp_path, monkeypatch):
    monkeypatch.setenv("SMOKE_DEVICE", "cpu")
    monkeypatch.setenv("SMOKE_DTYPE", "float32")
    spec = importlib.util.spec_from_file_location("gpu_smoke", ROOT / "scripts" / "gpu_smoke.py")
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    monkeypatch.setattr(smoke, "RANDOM_LENGTHS", (17, 90))  # the GPU run's 1000-token prefix is slow on CPU
    model = tiny.make_model(tmp_path / "model")
    work = tmp_path / "work"
    smoke.prepare(model, work)
    data = json.loads((work / "smoke.json").read_text())
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    assert (data["stop_id"], data["stop_id2"]) == (vocab - 1, vocab - 2)
    assert load_stop_adapter(work / "adapter2")[0].stop_token_id == vocab - 2
    ref = tiny.ReferenceScorer(model, work / "ckpt")
    for ids, got in zip(data["prefixes"], data["reference"]):
        assert abs(got - ref.score(ids)) < 1e-4
    assert len({round(s, 4) for s in data["reference"]}) > 1  # the random head tells prefixes apart
