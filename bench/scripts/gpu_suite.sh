#!/usr/bin/env bash
# One prepared GPU measurement pass (about 5-8 min on one H100): every registered model, fp32 + bf16
# autocast, channels_last, batch 1 (p50/p90/p99 over 100 calls) and 64, the largest batch that fits
# (doubling search capped at MAX_BATCH_CAP), one SGD training step at batch 64 with its peak memory;
# after the GPU unit tests; then a torch.utils.benchmark cross-check and (time permitting) a short
# torch.compile check of resnet50. Results go to $OUT (default ./gpu-out):
#   env.txt, latency_gpu.json (fibrobench.latency/1), latency_gpu.txt, latency_compile.json,
#   latency_compile.txt, pytest_gpu.txt, suite.log
# Set-up: uses PYTHON if set, else ./.venv/bin/python, else the first python3/python that imports
# torch (the checkout is put on PYTHONPATH; nothing is installed); failing all, creates ./.gpu-venv with
# `pip install torch==2.14.1 torchvision==0.29.1 -e .` (needs a reachable package index or pip cache).
# Knobs (env): MODELS (comma list, default all), BUDGET_S (default 450), MAX_BATCH_CAP (512),
# RUNS (100), COMPILE (1 = try the compile check when time is left); for a dry run on a CPU box:
# DEVICE=cpu INPUT_SIZE=32 BATCHES=1,4 TRAIN_BATCH=4 MODELS=resnet50 RUNS=5 COMPILE=0 bench/scripts/gpu_suite.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
OUT=${OUT:-$REPO/gpu-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/suite.log") 2>&1
T0=$(date +%s)
BUDGET_S=${BUDGET_S:-450}
MAX_BATCH_CAP=${MAX_BATCH_CAP:-512}
RUNS=${RUNS:-100}
COMPILE=${COMPILE:-1}
DEVICE=${DEVICE:-cuda}
INPUT_SIZE=${INPUT_SIZE:-224}
BATCHES=${BATCHES:-1,64}
TRAIN_BATCH=${TRAIN_BATCH:-64}
elapsed() { echo $(( $(date +%s) - T0 )); }
say() { echo "[gpu_suite +$(elapsed)s] $*"; }

has_torch() { "$1" -c "import torch, torchvision, timm, numpy" >/dev/null 2>&1; }
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in "$REPO/.venv/bin/python" python3 python; do
    if command -v "$cand" >/dev/null 2>&1 && has_torch "$cand"; then PY=$(command -v "$cand"); break; fi
  done
fi
if [ -z "$PY" ]; then
  say "no python with torch+torchvision+timm found; creating .gpu-venv (needs a package index)"
  python3 -m venv "$REPO/.gpu-venv" && PY="$REPO/.gpu-venv/bin/python"
  "$PY" -m pip install -q torch==2.14.1 torchvision==0.29.1 -e "$REPO" || { say "pip install failed"; exit 3; }
fi
# the checkout itself, whether or not it is pip-installed; keep the CPU side quiet
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
say "python: $PY"
{
  echo "date: $(date -u +%FT%TZ)"; echo "python: $PY"
  "$PY" -c "import sys, torch, torchvision, timm; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version()); print('torchvision', torchvision.__version__, 'timm', timm.__version__); print('cuda available', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv 2>/dev/null
  git -C "$REPO" rev-parse HEAD 2>/dev/null
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if [ "$DEVICE" = cuda ]; then
  "$PY" -c "import torch; assert torch.cuda.is_available()" || { say "CUDA not available: stopping"; exit 4; }
fi

if "$PY" -c "import pytest" >/dev/null 2>&1; then
  say "GPU unit tests"
  timeout 60 "$PY" -m pytest -q -m gpu tests/test_latency.py -p no:cacheprovider > "$OUT/pytest_gpu.txt" 2>&1
  say "GPU unit tests exit $?"; tail -3 "$OUT/pytest_gpu.txt"
else
  say "GPU unit tests skipped (no pytest)"
fi

MODEL_ARGS=()
[ -n "${MODELS:-}" ] && MODEL_ARGS=(--models "$MODELS")

say "main pass on $DEVICE: ${MODELS:-all models}, fp32+bf16, batch $BATCHES at ${INPUT_SIZE}px, max-batch cap $MAX_BATCH_CAP, train batch $TRAIN_BATCH"
timeout $(( BUDGET_S - 60 )) "$PY" -m bench.commands.latency "${MODEL_ARGS[@]}" --device "$DEVICE" --input-size "$INPUT_SIZE" \
  --batch-sizes "$BATCHES" --precisions fp32,bf16 --channels-last --runs "$RUNS" --warmup 10 \
  --throughput-runs 20 --max-batch-cap "$MAX_BATCH_CAP" --train-batch "$TRAIN_BATCH" --train-runs 10 --cross-check \
  --json "$OUT/latency_gpu.json" > "$OUT/latency_gpu.txt"
rc=$?
say "main pass exit $rc"; cat "$OUT/latency_gpu.txt"
[ -f "$OUT/latency_gpu.json.partial" ] && say "partial results kept in latency_gpu.json.partial"

left=$(( BUDGET_S - $(elapsed) ))
if [ "$COMPILE" = 1 ] && [ "$left" -gt 120 ]; then
  say "torch.compile check: resnet50 bf16, batch $BATCHES (limit $(( left - 15 ))s)"
  timeout $(( left - 15 )) "$PY" -m bench.commands.latency --models resnet50 --device "$DEVICE" --input-size "$INPUT_SIZE" \
    --batch-sizes "$BATCHES" --precisions bf16 --channels-last --compile --runs "$RUNS" --warmup 10 \
    --throughput-runs 20 --max-batch-cap 0 --train-batch 0 --json "$OUT/latency_compile.json" \
    > "$OUT/latency_compile.txt"
  say "compile check exit $?"; cat "$OUT/latency_compile.txt"
else
  say "compile check skipped (${left}s left)"
fi
say "done; files in $OUT"
exit $rc
