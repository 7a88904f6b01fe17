#!/usr/bin/env bash
# Rebuilds the smollm2-reasoner and its STOP checkpoint, then measures every signal on held-out paths
# (docs/reasoner.md has the figures this produced). Every step resumes where a kill left it: rerun the
# script. On 2 CPU cores about 4 hours in all; STEPS/PROBLEMS shrink it for a smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
S=".venv/bin/sglang-stop"
RUNS="${RUNS:-runs/reasoner}"
mkdir -p "$RUNS"
# 1. the reasoner: LoRA on the reasoner task's written solutions (train pool), ~35 min
$S train-reasoner --out sglang_stop/assets/smollm2-reasoner --work "$RUNS/reasoner.work" \
    --steps "${STEPS:-130}" --threads 2
# 2. Monte Carlo labels on the label pool (P=4 prefixes of 16 tokens, K=8 continuations each)
$S label --task reasoner --split label --problems "${PROBLEMS:-128}" -P 4 -K 8 --prefix-len 16 \
    --max-new-tokens 96 --threads 2 --out "$RUNS/labels-train.jsonl"
# 3. STOP on those labels (k=4 [STOP] tokens, LoRA r=4: a 5 MB checkpoint)
$S train --model smollm2-reasoner --labels "$RUNS/labels-train.jsonl" --out sglang_stop/assets/smollm2-reasoner-stop \
    --lora-r 4 --lora-alpha 8 --epochs 8 --select within_auc --threads 2
# 4. held-out paths: 200 eval problems x 16 whole paths (K=1: each record is one path)
$S label --task reasoner --split eval --problems 200 -P 16 -K 1 --prefix-len 16 --max-new-tokens 96 \
    --threads 2 --out "$RUNS/paths-eval.jsonl"
# 5. every signal on those paths, pruning replayed at keep 1, 2, 4; DeepConf online low / high
$S bench signals --model smollm2-reasoner --labels "$RUNS/paths-eval.jsonl" --threads 2 \
    --online '{"percentile": 90, "window": 8}' --online '{"percentile": 10, "window": 8}' \
    --png docs/reasoner-signals.png --out "$RUNS/signals.json"
# 6. the Type II verifier on the same labels (a second model copy with its own LoRA; ~5 min an epoch)
$S train-verifier --base smollm2-reasoner --labels "$RUNS/labels-train.jsonl" --out "$RUNS/verifier" \
    --epochs 3 --lora-r 8 --threads 2
$S bench verifier --model smollm2-reasoner --checkpoint sglang_stop/assets/smollm2-reasoner-stop \
    --verifier "$RUNS/verifier" --tokens 100 --repeats 5
# 7. what the prefix holds at 16 tokens: per-layer probes, and written slips at several prune points
PYTHONPATH=. .venv/bin/python scripts/reasoner_probes.py "$RUNS/labels-train.jsonl" "$RUNS/paths-eval.jsonl" \
    --threads 2 --out "$RUNS/probes.json"
PYTHONPATH=. .venv/bin/python scripts/reasoner_slips.py "$RUNS/paths-eval.jsonl" --out "$RUNS/slips.json"
# 8. a later prune point: labels and STOP at 24 tokens, every signal on the same held-out paths re-cut at 24
$S label --task reasoner --split label --problems "${PROBLEMS:-128}" -P 4 -K 8 --prefix-len 24 \
    --max-new-tokens 96 --threads 2 --out "$RUNS/labels-train-24.jsonl"
$S train --model smollm2-reasoner --labels "$RUNS/labels-train-24.jsonl" --out "$RUNS/stop-24" \
    --lora-r 4 --lora-alpha 8 --epochs 8 --select within_auc --threads 2
$S bench signals --model smollm2-reasoner --checkpoint "$RUNS/stop-24" \
    --extra-stop stop-16=sglang_stop/assets/smollm2-reasoner-stop --verifier "$RUNS/verifier" \
    --labels "$RUNS/paths-eval.jsonl" --prefix-len 24 --threads 2 \
    --online '{"percentile": 90, "window": 8}' --online '{"percentile": 10, "window": 8}' \
    --png "$RUNS/signals-24.png" --out "$RUNS/signals-24.json"
