#!/usr/bin/env bash
# Issue 11 in the path workers run, on one GPU, through the real queue (SQLite) and `haares worker`:
# the smoke grid; one small-48L HAARES run alone then four at once (--slots 4); the fastpath_check
# grid (500-step paired runs: reference router uncompiled in fp32, the fast path in fp32 and bf16);
# and the shakespeare_lr sweep (issue 13). Writes one tarball: the database, the run folders without
# checkpoints, the worker logs. Usage on the device machine: bash benchmarks/gpu_worker_checks.sh OUTDIR
set -u
OUT=${1:?outdir}
export PYTHONUNBUFFERED=1 HAARES_HOME=/tmp/hh HAARES_DB=sqlite:////tmp/hh/queue.db
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
H="python3 -m haares.cli.app"
mkdir -p /tmp/logs
$H enqueue --grid smoke --precision bf16 --priority 9
$H worker --gpu 0 --slots 3 > /tmp/logs/worker-smoke.log 2>&1; echo "smoke done after ${SECONDS}s"
$H enqueue --grid slots_check --priority 8
$H worker --gpu 0 --slots 1 --max-jobs 1 > /tmp/logs/worker-slots1.log 2>&1; echo "one slot done after ${SECONDS}s"
$H worker --gpu 0 --slots 4 --max-jobs 4 > /tmp/logs/worker-slots4.log 2>&1; echo "four slots done after ${SECONDS}s"
$H enqueue --grid fastpath_check --priority 5
$H enqueue --grid shakespeare_lr --precision bf16 --priority 4
timeout -s TERM 370 $H worker --gpu 0 --slots 6 > /tmp/logs/worker-checks.log 2>&1; echo "checks done after ${SECONDS}s"
$H status > /tmp/logs/status.txt 2>&1
cp /tmp/hh/queue.db /tmp/logs/queue.db
tar czf "$OUT/worker-checks.tgz" --exclude='*.ckpt' -C /tmp logs hh/runs
ls -la "$OUT"; tail -5 /tmp/logs/status.txt
