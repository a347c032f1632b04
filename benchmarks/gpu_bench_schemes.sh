#!/usr/bin/env bash
# Issue 11 on one GPU: `haares bench` for medium 48L (batch 16 x 512) on the auto fast path, one
# scheme per process so each peak-memory figure is that scheme's alone.
# Usage on the device machine: bash benchmarks/gpu_bench_schemes.sh OUTDIR [PRECISIONS] [SCHEMES] [CHECKED] [ROUTERS]
#   PRECISIONS, SCHEMES: comma-separated (default bf16; standard,block_attnres,haares)
#   CHECKED: schemes whose equivalence checks run too (default none: the checks take longer than the timing)
#   ROUTERS: comma-separated router implementations for the routed schemes (default auto), e.g.
#     fused,triton,triton_virtual for an A/B on one machine; Standard has no router and runs once
# Needs no database and no datasets. Writes bench-PRECISION-SCHEME.{json,log} and results.tgz.
set -u
OUT=${1:?outdir}
PRECISIONS=${2:-bf16}
SCHEMES=${3:-standard,block_attnres,haares}
CHECKED=${4:-}
ROUTERS=${5:-auto}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt"
python3 -c 'import torch; print(torch.__version__)' >> "$OUT/gpu.txt"
git log -1 --format='%H %s' >> "$OUT/gpu.txt" 2>/dev/null
for precision in ${PRECISIONS//,/ }; do
  for scheme in ${SCHEMES//,/ }; do
    routers=${ROUTERS//,/ }
    [[ $scheme == standard ]] && routers=auto
    for router in $routers; do
      checks=--no-checks
      [[ ",$CHECKED," == *",$scheme,"* ]] && checks=
      name="bench-$precision-$scheme-$router"
      echo "== $name $checks"
      timeout 300 python3 -m haares.bench --family medium --layers 48 --schemes "$scheme" --router "$router" \
        --steps 20 --warmup 3 --precision "$precision" $checks --json "$OUT/$name.json" > "$OUT/$name.log" 2>&1
      echo "exit $? after ${SECONDS}s"
      tail -4 "$OUT/$name.log"
    done
  done
done
cd "$OUT" && tar czf results.tgz *.json *.log gpu.txt 2>/dev/null
