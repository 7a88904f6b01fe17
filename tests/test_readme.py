"""The README's code runs as written: every command line is either run here (on the tiny testbed model
where the embedded default would be too slow; the substitution is spelled out) or listed with the
reason it cannot run in a test; every Python block is executed."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.battery import ROOT, TESTBED, TESTBED_STOP, run_cli

README = (ROOT / "README.md").read_text()
TB = f"--model {TESTBED} --task testbed"
FAST = "--max-new-tokens 64"

# README command (comment stripped) -> the command run in the test, or None with the reason in SKIP.
RUN: dict[str, str | None] = {
    "./install.sh && .venv/bin/sglang-stop run --problems 20": f"sglang-stop run {TB} --problems 2 {FAST}",
    ".venv/bin/python -m pytest -q": None,
    "sglang-stop run --config configs/progressive.yaml --task chain_sum --problems 50 --out results.jsonl":
        f"sglang-stop run --config configs/progressive.yaml {TB} --problems 3 {FAST} --out {{tmp}}/results.jsonl",
    "sglang-stop run --config configs/progressive.yaml --task chain_sum --problems 50 --out results.jsonl --resume":
        f"sglang-stop run --config configs/progressive.yaml {TB} --problems 3 {FAST} --out {{tmp}}/results.jsonl --resume",
    "sglang-stop report results.jsonl": "sglang-stop report {tmp}/results.jsonl",
    "sglang-stop run --n 16 --prefix-len 32 --keep 4 --scorer confidence --json":
        f"sglang-stop run --n 16 --prefix-len 32 --keep 4 --scorer confidence --json {TB} --problems 2 {FAST}",
    'sglang-stop run --task chain_sum --question "What is 17 + 25 - 9?"':
        f"sglang-stop run {TB} --question Q4+4+1-8-4= {FAST}",
    "sglang-stop run --model /path/to/hf-model --task mmath:aime2024 --n 64 --prefix-len 2048 --keep 8 --max-new-tokens 8192":
        None,
    "sglang-stop schema": "sglang-stop schema",
    "sglang-stop run --config configs/reasoner.yaml --problems 20":
        "sglang-stop run --config configs/reasoner.yaml --problems 1 --n 4 --prefix-len 16 --keep 2 --max-new-tokens 32",
    "sglang-stop bench pipeline --config configs/reasoner.yaml --problems 20":
        "sglang-stop bench pipeline --config configs/reasoner.yaml --problems 1 --n 4 --prefix-len 16 --keep 2 "
        "--max-new-tokens 32",
    "sglang-stop bench pipeline --problems 20 --n 16 --prefix-len 32 --keep 4":
        f"sglang-stop bench pipeline --problems 2 --n 16 --prefix-len 32 --keep 4 {TB} {FAST}",
    "sglang-stop label --model M --task T --problems 500 -P 8 -K 16 --prefix-len 16 --out labels.jsonl":
        f"sglang-stop label {TB} --problems 4 -P 2 -K 2 --prefix-len 16 {FAST} --out {{tmp}}/labels.jsonl",
    "sglang-stop train --model M --labels labels.jsonl --out ckpt/":
        f"sglang-stop train --model {TESTBED} --labels {{tmp}}/labels.jsonl --out {{tmp}}/ckpt/ --epochs 1 --k 2 --lora-r 2 --val-fraction 0.5",
    "sglang-stop run --model M --task T --scorer stop --checkpoint ckpt/":
        f"sglang-stop run {TB} --scorer stop --checkpoint {{tmp}}/ckpt/ --problems 2 {FAST}",
    "sglang-stop calibrate --task chain_sum --problems 60 --n-max 32 --prefix-lens 16,32,64 --out calib.jsonl":
        f"sglang-stop calibrate {TB} --problems 4 --n-max 8 --prefix-lens 8,16,32 {FAST} --out {{tmp}}/calib.jsonl",
    "stop-advise recommend --calib calib.jsonl --budget 1500 --out rec.yaml":
        "stop-advise recommend --calib {tmp}/calib.jsonl --budget 300 --out {tmp}/rec.yaml --trials 8 --draws 8",
    "sglang-stop run --config rec.yaml --out run.jsonl":
        f"sglang-stop run --config {{tmp}}/rec.yaml {TB} --problems 3 --out {{tmp}}/run.jsonl",
    "stop-advise check --config rec.yaml --results run.jsonl": "stop-advise check --config {tmp}/rec.yaml --results {tmp}/run.jsonl",
    "stop-advise guideline --budget 161792 --prefix-len 2048 --task-len 8650":
        "stop-advise guideline --budget 161792 --prefix-len 2048 --task-len 8650",
    "python -m sglang_stop.srt.convert /ckpt/stop /models/base /ckpt/stop-sglang": None,
    "python -m sglang.launch_server --model-path /models/base --enable-lora --lora-paths stop=/ckpt/stop-sglang "
    "--max-lora-rank 128 --max-loras-per-batch 2 --return-hidden-states-mode last --page-size 1": None,
    "sglang-stop run --server http://127.0.0.1:30000 --scorer stop": None,
}
SKIP = {
    ".venv/bin/python -m pytest -q": "it is this test suite",
    "sglang-stop run --model /path/to/hf-model --task mmath:aime2024 --n 64 --prefix-len 2048 --keep 8 --max-new-tokens 8192":
        "needs a user's model; its options are validated by tests/test_battery.py",
    "python -m sglang_stop.srt.convert /ckpt/stop /models/base /ckpt/stop-sglang": "tests/server/test_convert.py runs it",
    "python -m sglang.launch_server --model-path /models/base --enable-lora --lora-paths stop=/ckpt/stop-sglang "
    "--max-lora-rank 128 --max-loras-per-batch 2 --return-hidden-states-mode last --page-size 1": "a GPU server; tests/server runs it on CPU",
    "sglang-stop run --server http://127.0.0.1:30000 --scorer stop": "tests/server/test_program_server.py runs it",
}


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def commands() -> list[str]:
    out = []
    for b in blocks("bash"):
        for line in b.replace("\\\n", "").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            line = re.sub(r"\s+", " ", line)
            if line:
                out.append(line)
    return out


def test_every_readme_command_is_covered():
    cmds = commands()
    assert cmds, "no bash blocks found"
    missing = [c for c in cmds if c not in RUN]
    assert not missing, f"README commands without a test recipe: {missing}"
    assert all((RUN[c] is None) == (c in SKIP) for c in RUN)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("readme")


@pytest.mark.parametrize("cmd", [c for c in RUN if RUN[c] is not None])
def test_readme_command_runs(cmd, tmp):
    argv = [a.format(tmp=tmp) for a in RUN[cmd].split()]  # type: ignore[union-attr]
    r = run_cli(argv, timeout=600)
    assert r.returncode == 0, (RUN[cmd], r.stderr[-3000:])
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("i", range(len(blocks("python"))))
def test_readme_python_block_runs(i, tmp_path):
    code = blocks("python")[i]
    if "register_scorer" in code:  # a definition only; exercise it
        code += "\nprint(Shortest().score([], None))\n"
    code = (code.replace("load_model(None)", f"load_model({str(TESTBED)!r})")
                .replace('load_task("chain_sum")', 'load_task("testbed")')
                .replace('task="chain_sum"', f'task="testbed", model={str(TESTBED)!r}, sampling__max_new_tokens=48')
                .replace('"What is 17 + 25 - 9?"', '"Q4+4+1-8-4="'))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "None" not in r.stdout.split("\n")[0] or "register_scorer" in blocks("python")[i], r.stdout
