#!/usr/bin/env bash
# GPU smoke test of the sglang-stop SGLang plugin on real CUDA paths (one GPU, a ~0.5B Qwen2 model, < 10 min).
#
#   scripts/gpu_smoke.sh /models/Qwen2.5-0.5B-Instruct [WORK_DIR]
#
# Needs: a CUDA GPU, and a Python (PYTHON, default `python`) with sglang==0.5.23 (CUDA build), sglang-stop
# (which registers the plugin) and peft. It makes a random STOP checkpoint for the model, converts it
# (two adapters, two reserved ids), computes PEFT reference scores in bf16, launches
# `python -m sglang.launch_server` with CUDA graphs on, and checks (scripts/gpu_smoke.py check):
# scores vs PEFT, cached_tokens, [STOP] never sampled on graph replays and eager batches (also for an
# adapter loaded after start-up), base outputs unchanged beside STOP scoring, latency of 64 x 1k prefixes.
# Exit 0 = every check passed; the server log is WORK_DIR/server.log. See docs/server.md.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 || "$1" == -h || "$1" == --help ]]; then
  echo "usage: $0 MODEL_DIR [WORK_DIR]" >&2
  exit 2
fi
MODEL=$1
WORK=${2:-$(mktemp -d -t sglang-stop-smoke.XXXXXX)}
PY=${PYTHON:-python}
PORT=${PORT:-30123}
GRAPH_MAX_BS=${SMOKE_CUDA_GRAPH_MAX_BS:-8}
START_TIMEOUT_S=${SMOKE_START_TIMEOUT_S:-300}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
URL="http://127.0.0.1:${PORT}"

if [[ ! -f "$MODEL/config.json" ]]; then
  echo "error: $MODEL: not a Hugging Face model directory (no config.json)" >&2
  exit 2
fi
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "error: no CUDA device visible to $PY" >&2
  exit 2
fi
if ! "$PY" -c 'import sglang.srt, sglang_stop.srt.plugin, peft' 2>/dev/null; then
  echo "error: $PY lacks sglang (with its server), sglang-stop or peft" >&2
  exit 2
fi
mkdir -p "$WORK"
echo "work dir: $WORK"

t0=$(date +%s)
"$PY" "$HERE/gpu_smoke.py" prepare "$MODEL" "$WORK"

SERVER_PID=
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM -- "-$SERVER_PID" 2>/dev/null || kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT   # the EXIT trap stops the server
trap 'exit 143' TERM

# setsid: the server and its scheduler/detokenizer children form one process group, stopped together.
setsid "$PY" -m sglang.launch_server \
  --model-path "$MODEL" --host 127.0.0.1 --port "$PORT" \
  --dtype bfloat16 --mem-fraction-static 0.6 --random-seed 0 \
  --enable-lora --lora-paths "stop=$WORK/adapter" --max-lora-rank 8 --max-loras-per-batch 4 \
  --return-hidden-states-mode last --page-size 1 \
  --cuda-graph-max-bs "$GRAPH_MAX_BS" \
  >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

deadline=$(( $(date +%s) + START_TIMEOUT_S ))
until curl -sf "$URL/health" >/dev/null && curl -sf "$URL/stop/adapters" >/dev/null; do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "error: the server exited during start-up; last lines of $WORK/server.log:" >&2
    tail -n 30 "$WORK/server.log" >&2
    exit 1
  fi
  if (( $(date +%s) > deadline )); then
    echo "error: server not healthy after ${START_TIMEOUT_S}s; see $WORK/server.log" >&2
    exit 1
  fi
  sleep 2
done
echo "server up after $(( $(date +%s) - t0 ))s (incl. prepare)"
grep -m1 -i "cuda graph" "$WORK/server.log" || echo "note: no 'cuda graph' line in the server log"

rc=0
SMOKE_CUDA_GRAPH_MAX_BS="$GRAPH_MAX_BS" "$PY" "$HERE/gpu_smoke.py" check "$URL" "$WORK" | tee "$WORK/smoke-result.txt" || rc=$?
echo "total $(( $(date +%s) - t0 ))s; result: $([[ $rc -eq 0 ]] && echo PASS || echo FAIL) (log: $WORK/server.log)"
exit "$rc"
