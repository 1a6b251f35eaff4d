#!/usr/bin/env bash
# fibrobench CI: smoke protocol on synthetic data, then the regression gate, the binary smoke task and its gate,
# and a short benchmark pass.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
python3 dev.py env                                   # ./.venv with fibrobench[test] (torch from the wheel cache)
F=.venv/bin/fibrobench
W=${CI_WORK:-ci-work}
BASE=${FIBROBENCH_GATE_BASELINE:-bench/baselines/smoke-gate.json}
rm -rf "$W" && mkdir -p "$W"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

# 1. data: deterministic synthetic B-mode frames (seed 0), small enough for CPU. 100 patients of 3 frames on
#    average (~300 frames, about the cost of 40 patients of 7): the gated CIs are over holdout patients (20, not 8)
$F synth "$W/data" --patients 100 --frames-per-patient 3 --seed 0 --size 256x192 --quiet

# 2. the smoke protocol split by patient (afif2025 pipeline at 64 px, 3 epochs of batch 16, resnet50 +
#    resnet50_cbam, 5 folds): the gate then guards what generalises to unseen patients, not what an image-level
#    split lets a model memorise (frames of one patient on both sides). One thread, as its baseline was recorded
#    (CPU training repeats bitwise at a fixed thread count, not across thread counts; see step 5).
OMP_NUM_THREADS=1 $F run protocols/smoke/protocol-patient.yaml --data "$W/data" --out "$W/run" --device cpu --no-progress

# 3. cost of the two models at the protocol's input size
$F latency --models resnet50,resnet50_cbam --device cpu --input-size 64 --batch-sizes 1,16 \
  --precisions fp32 --runs 30 --warmup 5 --throughput-runs 5 --train-batch 16 --train-runs 5 \
  --quiet --json "$W/run/latency.json"

# 4. the gate: metrics vs the baseline's CIs; latency/memory only when the CPU model matches.
#    Shared CI runners are noisy: latency +100 %, memory +25 % before failing.
if [ ! -f "$BASE" ]; then
  $F gate "$W/run" --baseline "$BASE" --write-baseline
  echo "ci: no gate baseline yet; recorded $BASE from this run -- review and commit it"
fi
$F gate "$W/run" --baseline "$BASE" --latency-tol 100 --memory-tol 25 \
  --json "$W/gate.json" --junit "$W/gate-junit.xml"

# 5. a non-five-class task on the same frames: the binary smoke task (F0-F1 vs F2-F4, resnet50 only, about half
#    the cost of step 2), split by patient like step 2, gated on its metrics (its latency is step 3's resnet50).
#    One thread, as its baseline was recorded: CPU training is bitwise repeatable at a fixed thread count, not
#    across thread counts.
BASE2=${FIBROBENCH_GATE_BASELINE_BINARY:-bench/baselines/smoke-binary-gate.json}
OMP_NUM_THREADS=1 $F run protocols/smoke/protocol-binary-patient.yaml --data "$W/data" --out "$W/run-binary" --device cpu --no-progress
if [ ! -f "$BASE2" ]; then
  $F gate "$W/run-binary" --baseline "$BASE2" --write-baseline
  echo "ci: no binary gate baseline yet; recorded $BASE2 from this run -- review and commit it"
fi
$F gate "$W/run-binary" --baseline "$BASE2" --json "$W/gate-binary.json" --junit "$W/gate-binary-junit.xml"

# 6. short benchmark pass: fails only on a >3x slower median whose fastest round is also slower
.venv/bin/python -m pytest -q bench/benchmarks -p no:cacheprovider --benchmark-only \
  --benchmark-min-rounds=3 --benchmark-max-time=0.2 --benchmark-json="$W/bench.json"
.venv/bin/python -m bench.scripts.bench_gate "$W/bench.json" --threshold 2.0 --json "$W/bench-gate.json"
