#!/usr/bin/env bash
# Builds the venv that runs the REAL SGLang server on CPU for tests/server (separate from .venv:
# the server pins transformers==5.19.0 and needs extra HTTP/scheduler deps the frontend does not).
# CPU-only: sglang --no-deps plus exactly the deps the CPU path imports; no CUDA packages.
# The three stand-ins (sgl_kernel, torchvision, sitecustomize) live in tests/server/standins and are
# put on PYTHONPATH by the test fixture, not installed here. Re-running is cheap.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${SGLANG_STOP_SERVER_VENV:-$ROOT/.venv-server}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
quiet() { grep -v -e '^WARNING: Location' -e 'dependency conflicts' -e 'requires' || true; }
# Pinned CPU torch first: an unpinned torch pulls a multi-GB CUDA build.
"${PIP[@]}" torch==2.13.0 triton==3.6.0 2>&1 | quiet
"${PIP[@]}" --no-deps sglang==0.5.23 2>&1 | quiet
# What `python -m sglang.launch_server --device cpu` imports on the torch_native path (found by trying).
"${PIP[@]}" transformers==5.19.0 tokenizers==0.23.2 safetensors huggingface_hub \
  fastapi "uvicorn>=0.51" uvloop orjson psutil pybase64 requests packaging pillow pydantic msgspec \
  "pyzmq>=25.1.2" setproctitle python-multipart "prometheus-client>=0.20.0" xxhash einops regex \
  numpy scipy aiohttp tqdm IPython interegular partial_json_parser sentencepiece==0.2.1 \
  dill jsonschema gguf openai==2.8.0 xgrammar==0.2.7 compressed-tensors==0.18.0 soundfile==0.13.1 \
  apache-tvm-ffi==0.1.11 2>&1 | quiet
# The router for tests/server/test_router.py (a Rust binary in a wheel; its deps are already above).
"${PIP[@]}" sglang-router==0.3.2 2>&1 | quiet
# This package without its (frontend) deps: registers the sglang.srt.plugins entry point.
# (setuptools' editable build prints a notice box on success: kept in a log, shown only on failure.)
"${PIP[@]}" --no-deps -e "$ROOT" > "$VENV/install-self.log" 2>&1 || { cat "$VENV/install-self.log" >&2; exit 1; }
"$VENV/bin/python" -c "import sglang, torch, transformers; print('server venv:', sglang.__version__, torch.__version__, transformers.__version__)"
