#!/usr/bin/env bash
# Issue 11 in the path workers run, on one GPU, through the real queue (SQLite) and `haares worker`.
# Usage on the device machine: bash benchmarks/gpu_worker_checks.sh OUTDIR PHASES
#   PHASES, comma-separated, run in this order:
#     slots   slots_check under CUDA MPS (where the machine has it): one small-48L HAARES run alone
#             (bf16, 300 steps; the first run of that shape on the machine, so its warm-up is a cold
#             compile), then four at once (--slots 4)
#     smoke   the smoke grid in bf16 (--slots 3)
#     small   a small-48L pair: shakespeare's 48L cell, seed 42, 500 steps, bf16, one run at a time
#     medium  a medium-48L pair: main48 seed 42 on the offline corpus, 200 steps (eval every 100), bf16,
#             one run at a time, MPS off: the worker's recorded tokens/s beside `haares bench`
#   DEADLINE=SECONDS (default 560): each worker is cut there (SIGTERM: its jobs checkpoint and requeue).
# Needs .whl (sqlalchemy, greenlet, platformdirs) carried. Writes OUTDIR/worker.tgz after every phase:
# the database, the run folders without checkpoints, the worker logs, nvidia-smi samples.
set -u
OUT=${1:?outdir}; PHASES=${2:-slots,smoke,small}; DEADLINE=${DEADLINE:-560}
export PYTHONUNBUFFERED=1 HAARES_HOME=/tmp/hh HAARES_DB=sqlite:////tmp/hh/queue.db
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
H="python3 -m haares.cli.app"
mkdir -p /tmp/hh /tmp/logs /tmp/mps /tmp/mps-log
mps_on() {
  if command -v nvidia-cuda-mps-control >/dev/null && { nvidia-cuda-mps-control -d 2>/dev/null; true; } \
     && timeout 60 python3 -c "import torch; assert torch.ones(1, device='cuda').item() == 1"; then
    echo "CUDA MPS on"
  else
    echo "CUDA MPS not available: the slots time-slice the GPU"; echo quit | nvidia-cuda-mps-control 2>/dev/null
  fi
}
mps_off() { echo quit | nvidia-cuda-mps-control 2>/dev/null; sleep 2; }
worker() {  # worker LOGNAME ARGS...: one `haares worker`, cut at the deadline
  local log=$1; shift
  local left=$((DEADLINE - SECONDS))
  if (( left < 20 )); then echo "$log skipped: deadline"; return; fi
  timeout -s TERM "$left" $H worker --gpu 0 "$@" > "/tmp/logs/$log.log" 2>&1
  echo "$log exit $? after ${SECONDS}s"
}
pack() {
  $H status > /tmp/logs/status.txt 2>&1
  cp /tmp/hh/queue.db /tmp/logs/queue.db 2>/dev/null
  tar czf "$OUT/worker.tgz" --exclude='*.ckpt' --exclude='*.pt' -C /tmp logs hh/runs 2>/dev/null
}
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 > /tmp/logs/smi.csv 2>&1 &
smi=$!
for phase in ${PHASES//,/ }; do
  case $phase in
    slots)
      mps_on
      $H enqueue --grid slots_check --priority 9
      worker worker-slots1 --slots 1 --max-jobs 1
      worker worker-slots4 --slots 4 --max-jobs 4
      mps_off ;;
    smoke)
      $H enqueue --grid smoke --precision bf16 --priority 8
      worker worker-smoke --slots 3 ;;
    small)
      $H enqueue --grid shakespeare --cells 48L --seeds 42 --steps 500 --priority 7
      worker worker-small --slots 1 ;;
    medium)
      mps_off
      $H enqueue --grid main48 --seeds 42 --steps 200 --eval-every 100 --precision bf16 \
        --set data.dataset=offline_english --set data.eval_tokens=65536 --priority 6
      worker worker-medium --slots 1 ;;
    *) echo "unknown phase $phase"; exit 2 ;;
  esac
  pack
done
kill $smi
pack
tail -12 /tmp/logs/status.txt
