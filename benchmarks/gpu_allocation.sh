#!/usr/bin/env bash
# One short GPU allocation (at most 10 minutes, nothing kept after it but OUTDIR/state.tgz), draining
# the queue through the real `haares enqueue` / `haares worker` on SQLite. A second allocation is
# started with the previous state.tgz in ./state/ (carried) and continues where the first stopped.
#   first:  slots_check one slot then four; the smoke grid, the shakespeare_lr sweep and
#           fastpath_check side by side; then the learning rate is chosen (lowest mean best val loss of Standard and HAARES
#           at 500 steps) and shakespeare (48L cell first, then 24L, 12L) and shakespeare_ablations go in.
#   always: `haares worker --slots 8` until DEADLINE seconds into the allocation, then SIGTERM: running
#           jobs checkpoint and go back to the queue as preempted (no retry spent); then `haares pack`
#           writes OUTDIR/state.tgz (and the worker logs OUTDIR/logs.tgz).
# Usage on the device machine: bash benchmarks/gpu_allocation.sh OUTDIR DEADLINE_S
set -u
OUT=${1:?outdir}; DEADLINE=${2:-540}
export PYTHONUNBUFFERED=1 HAARES_HOME=/tmp/hh HAARES_DB=sqlite:////tmp/hh/queue.db
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
H="python3 -m haares.cli.app"
mkdir -p /tmp/hh /tmp/logs
if [ -f state/state.tgz ]; then $H unpack state/state.tgz; tar xzf state/logs.tgz -C /tmp; fi
n=$(ls /tmp/logs | wc -l)
if [ ! -f /tmp/hh/queue.db ]; then
  $H enqueue --grid slots_check --priority 9
  $H worker --gpu 0 --slots 1 --max-jobs 1 > /tmp/logs/worker-slots1.log 2>&1; echo "one slot done after ${SECONDS}s"
  $H worker --gpu 0 --slots 4 --max-jobs 4 > /tmp/logs/worker-slots4.log 2>&1; echo "four slots done after ${SECONDS}s"
  $H enqueue --grid smoke --precision bf16 --priority 8
  $H enqueue --grid shakespeare_lr --priority 8
  $H enqueue --grid fastpath_check --priority 7
  $H worker --gpu 0 --slots 10 --time-limit 150s --checkpoint-margin 25 > /tmp/logs/worker-checks.log 2>&1
  echo "checks stopped after ${SECONDS}s"
  python3 benchmarks/pick_lr.py /tmp/hh/queue.db > /tmp/logs/lr.txt; cat /tmp/logs/lr.txt
  LR=$(tail -1 /tmp/logs/lr.txt)
  python3 benchmarks/enqueue_shakespeare.py "$LR" >> /tmp/logs/lr.txt
fi
left=$((DEADLINE - SECONDS))
echo "draining for ${left}s"
# The drain ends with SIGTERM at the deadline (the worker preempts cleanly: checkpoint, back to queued,
# no retry spent) rather than --time-limit: its claim estimate (attempt wall time over steps, start-up
# included, x1.25) from 500-step runs refuses the 2,000-step runs that would in fact fit.
timeout -s TERM "$left" $H worker --gpu 0 --slots 8 > "/tmp/logs/worker-drain-$n.log" 2>&1
echo "drain stopped after ${SECONDS}s"
$H status > "/tmp/logs/status-$n.txt" 2>&1
$H pack "$OUT/state.tgz"
tar czf "$OUT/logs.tgz" -C /tmp logs
ls -la "$OUT"; tail -4 "/tmp/logs/status-$n.txt"
