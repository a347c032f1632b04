#!/usr/bin/env bash
# One short GPU allocation (at most 10 minutes, nothing kept after it but OUTDIR/state.tgz), draining
# the queue through the real `haares enqueue` / `haares worker` on SQLite. A second allocation is
# started with the previous state.tgz in ./state/ (carried) and continues where the first stopped.
#   first:  slots_check one slot then four; the smoke grid, the shakespeare_lr sweep and
#           fastpath_check side by side; then the learning rate is chosen (lowest mean best val loss of Standard and HAARES
#           at 500 steps) and shakespeare (48L cell first, then 24L, 12L) and shakespeare_ablations go in.
#   always: CUDA MPS is started when the machine has it (so that --slots children run kernels side by
#           side instead of time-slicing the GPU); `haares worker --slots SLOTS --time-limit` until
#           DEADLINE seconds into the allocation: it claims only runs that its estimate says can finish,
#           and at the margin running jobs checkpoint and go back to the queue as preempted (no retry
#           spent); then `haares pack` writes OUTDIR/state.tgz, the Inductor cache OUTDIR/inductor.tgz
#           (in 15 MB parts, carried back as state/inductor.tgz.*, it saves the next allocation's cold compiles) and the
#           logs OUTDIR/logs.tgz.
# Usage on the device machine: bash benchmarks/gpu_allocation.sh OUTDIR DEADLINE_S [SLOTS]
#   HOLD="grid ..." holds those grids' queued jobs for this allocation (`haares hold --grid`);
#   STOP=term ends the drain with SIGTERM at the deadline instead of --time-limit's claim rule (the
#   jobs preempt just as cleanly; runs cut there start over in the next allocation, or resume from
#   their checkpoints when the next call finds this machine still warm, as a shared filesystem would);
#   ENQUEUE="grid:seeds:priority ..." enqueues those (seeds comma-separated) before the drain;
#   RETRY="job_id ..." requeues those failed jobs (`haares retry`) before the drain;
#   SLOTS_CHECK=STEPS enqueues slots_check's five runs again at STEPS steps (`--steps` gives them new run
#   keys; the grid's own 300-step runs are the first allocation's) and trains one run alone, then four
#   at once (`--slots 1 --max-jobs 1`, then `--slots 4 --max-jobs 4`), before the drain;
#   PACK_EVERY=SECONDS also packs OUTDIR/state.tgz (and the logs) that often during the drain, so a call
#   cut short before its final pack still brings back every run finished by then (a snapshot taken
#   mid-run shows that run `running`: the next allocation reclaims it when its lease expires);
#   BENCH=SECONDS runs `haares bench` (medium 48L, bf16, the three schemes) after the pack, MPS stopped;
#   GRAPH_CHECK=STEPS runs benchmarks/graph_check.py (golf's Muon run, eager against one captured CUDA
#   graph, STEPS steps) before the drain, into OUTDIR/graph-check.json and the logs.
set -u
OUT=${1:?outdir}; DEADLINE=${2:-540}; SLOTS=${3:-4}
export PYTHONUNBUFFERED=1 HAARES_HOME=/tmp/hh HAARES_DB=sqlite:////tmp/hh/queue.db
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor CUDA_MPS_PIPE_DIRECTORY=/tmp/mps CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
H="python3 -m haares.cli.app"
mkdir -p /tmp/hh /tmp/logs
# The --slots measurement: one queued slots_check run alone, then four at once; $1 suffixes the logs.
slots_check() {
  $H worker --gpu 0 --slots 1 --max-jobs 1 > "/tmp/logs/worker-slots1$1.log" 2>&1; echo "one slot done after ${SECONDS}s"
  $H worker --gpu 0 --slots 4 --max-jobs 4 > "/tmp/logs/worker-slots4$1.log" 2>&1; echo "four slots done after ${SECONDS}s"
}
# A machine still warm from the previous call keeps /tmp: then its queue is the one just packed.
if [ -f state/state.tgz ] && [ ! -f /tmp/hh/queue.db ]; then
  $H unpack state/state.tgz || exit 1
  if [ -f state/logs.tgz ]; then tar xzf state/logs.tgz -C /tmp; fi
fi
if ls state/inductor.tgz.* >/dev/null 2>&1; then cat state/inductor.tgz.* | tar xz -C /tmp; fi
n=$(ls /tmp/logs | grep -c '^worker-drain')
mkdir -p /tmp/mps /tmp/mps-log
if command -v nvidia-cuda-mps-control >/dev/null && { nvidia-cuda-mps-control -d 2>/dev/null; true; } \
   && timeout 60 python3 -c "import torch; assert torch.ones(1, device='cuda').item() == 1"; then
  echo "CUDA MPS on"
else
  echo "CUDA MPS not available: the slots time-slice the GPU"; echo quit | nvidia-cuda-mps-control 2>/dev/null
fi
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 > "/tmp/logs/smi-$n.csv" 2>&1 &
smi=$!
if [ ! -f /tmp/hh/queue.db ]; then
  $H enqueue --grid slots_check --priority 9
  slots_check ""
  $H enqueue --grid smoke --precision bf16 --priority 8
  $H enqueue --grid shakespeare_lr --priority 8
  $H enqueue --grid fastpath_check --priority 7
  $H worker --gpu 0 --slots 10 --time-limit 150s --checkpoint-margin 25 > /tmp/logs/worker-checks.log 2>&1
  echo "checks stopped after ${SECONDS}s"
  python3 benchmarks/pick_lr.py /tmp/hh/queue.db > /tmp/logs/lr.txt; cat /tmp/logs/lr.txt
  LR=$(tail -1 /tmp/logs/lr.txt)
  python3 benchmarks/enqueue_shakespeare.py "$LR" >> /tmp/logs/lr.txt
fi
for spec in ${ENQUEUE:-}; do
  IFS=: read -r grid seeds priority <<< "$spec"
  $H enqueue --grid "$grid" --seeds "$seeds" --priority="$priority"
done
if [ -n "${RETRY:-}" ]; then $H retry ${RETRY}; fi
if [ -n "${SLOTS_CHECK:-}" ]; then
  $H enqueue --grid slots_check --steps "$SLOTS_CHECK" --priority 9 || exit 1
  slots_check "-$n"
fi
if [ -n "${GRAPH_CHECK:-}" ]; then
  python3 benchmarks/graph_check.py --grid golf --method muon --steps "$GRAPH_CHECK" --json "$OUT/graph-check.json" \
    > "/tmp/logs/graph-check-$n.txt" 2>&1; tail -3 "/tmp/logs/graph-check-$n.txt"
fi
for grid in ${HOLD:-}; do $H hold --grid "$grid"; done
left=$((DEADLINE - SECONDS))
echo "draining for ${left}s on $SLOTS slots"
packer=""
if [ -n "${PACK_EVERY:-}" ]; then
  # Stopped by a flag file, not a signal, so that a pack in progress finishes before the final one.
  ( last=$SECONDS
    while [ ! -f /tmp/stop-packing ]; do
      sleep 1
      if (( SECONDS - last >= PACK_EVERY )); then
        $H pack "$OUT/state.tgz" > /dev/null 2>&1; tar czf "$OUT/logs.tgz" -C /tmp logs 2>/dev/null; last=$SECONDS
      fi
    done ) &
  packer=$!
fi
# --claim-fraction 0.2: a run of a shape with no timing yet (a 12-layer run, say) is still claimed until
# 80% of the limit has gone; the margin preempts it cleanly if the guess was wrong.
if [ "${STOP:-}" = term ]; then
  timeout -s TERM "$left" $H worker --gpu 0 --slots "$SLOTS" > "/tmp/logs/worker-drain-$n.log" 2>&1
else
  $H worker --gpu 0 --slots "$SLOTS" --time-limit "${left}s" --claim-fraction 0.2 > "/tmp/logs/worker-drain-$n.log" 2>&1
fi
echo "drain stopped after ${SECONDS}s"; kill $smi
touch /tmp/stop-packing; if [ -n "$packer" ]; then wait "$packer"; fi; rm -f /tmp/stop-packing
for grid in ${HOLD:-}; do $H release --grid "$grid"; done
$H status > "/tmp/logs/status-$n.txt" 2>&1
$H pack "$OUT/state.tgz"
tar czf "$OUT/logs.tgz" -C /tmp logs
# Files come back at most 16 MiB each and 8 in all: the cache in 15 MB parts, at most five of them.
tar cz -C /tmp inductor > /tmp/inductor.tgz
if [ "$(stat -c %s /tmp/inductor.tgz)" -le $((5 * 15 * 1000 * 1000)) ]; then
  split -b 15M /tmp/inductor.tgz "$OUT/inductor.tgz."
else
  echo "Inductor cache $(du -h /tmp/inductor.tgz | cut -f1): too large to bring back"
fi
ls -la "$OUT"; tail -4 "/tmp/logs/status-$n.txt"
if [ -n "${BENCH:-}" ]; then
  echo quit | nvidia-cuda-mps-control 2>/dev/null
  timeout "$BENCH" python3 -m haares.bench --family medium --layers 48 --steps 20 --warmup 3 \
    --precision bf16 --json "$OUT/bench.json"
fi
