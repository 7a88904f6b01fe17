#!/usr/bin/env bash
# Rebuilds the smollm2-reasoner and its STOP checkpoint, then measures every signal on held-out paths
# (docs/reasoner.md has the figures this produced). Every step resumes where a kill left it: rerun the
# script. On 2 CPU cores about 2.5 hours in all; STEPS/PROBLEMS shrink it for a smoke run.
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
