#!/usr/bin/env bash
# Issue 11 on one GPU: `haares bench` for medium 48L (batch 16 x 512) on the fast path, one scheme and
# router per process so each peak-memory figure is that process's alone.
# Usage on the device machine: bash benchmarks/gpu_bench_schemes.sh OUTDIR [PRECISIONS] [SCHEMES] [CHECKED] [ROUTERS]
#   PRECISIONS, SCHEMES: comma-separated (default bf16; standard,block_attnres,haares)
#   CHECKED: PRECISION:SCHEME:ROUTER triples whose equivalence checks run too, comma-separated, `*` for
#     any part, a bare scheme name for all its rows (default none: the checks take longer than the
#     timing), e.g. fp32:haares:*
#   ROUTERS: comma-separated router implementations for the routed schemes (default auto), e.g.
#     fused,triton,triton_virtual for an A/B on one machine; Standard has no router and runs once;
#     triton_virtual differs from triton only for HAARES and runs for it alone
#   DEADLINE=SECONDS (default 540): no process starts after it, and each is cut at it.
#   TAG=NAME (default bench): results go to /tmp/NAME and OUTDIR/NAME.tgz, so that two runs of one call
#     (the code here and an old checkout's, run from its folder for an A/B) keep both.
# Needs no database and no datasets. Results go to /tmp/TAG (bench-PRECISION-SCHEME-ROUTER.{json,log})
# and, after every process, into OUTDIR/TAG.tgz, so a call cut at its limit still brings back the rest.
set -uf  # no globbing: CHECKED holds `*`
OUT=${1:?outdir}
PRECISIONS=${2:-bf16}
SCHEMES=${3:-standard,block_attnres,haares}
CHECKED=${4:-}
ROUTERS=${5:-auto}
DEADLINE=${DEADLINE:-540}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
TAG=${TAG:-bench}
RES=/tmp/$TAG
mkdir -p "$RES"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$RES/gpu.txt"
python3 -c 'import torch, triton; print(torch.__version__, "triton", triton.__version__)' >> "$RES/gpu.txt"
git log -1 --format='%H %s' >> "$RES/gpu.txt" 2>/dev/null
checked() {  # is $1:$2:$3 named in CHECKED?
  local spec p s r
  for spec in ${CHECKED//,/ }; do
    [[ $spec == *:* ]] || spec="*:$spec:*"
    IFS=: read -r p s r <<< "$spec"
    [[ ($p == '*' || $p == "$1") && ($s == '*' || $s == "$2") && ($r == '*' || $r == "$3") ]] && return 0
  done
  return 1
}
for precision in ${PRECISIONS//,/ }; do
  for scheme in ${SCHEMES//,/ }; do
    routers=${ROUTERS//,/ }
    [[ $scheme == standard ]] && routers=auto
    for router in $routers; do
      [[ $router == triton_virtual && $scheme != haares ]] && continue
      left=$((DEADLINE - SECONDS))
      name="bench-$precision-$scheme-$router"
      if (( left < 30 )); then echo "== $name skipped: deadline"; continue; fi
      checks=--no-checks
      checked "$precision" "$scheme" "$router" && checks=
      echo "== $name $checks"
      timeout "$left" python3 -m haares.bench --family medium --layers 48 --schemes "$scheme" --router "$router" \
        --steps 20 --warmup 3 --precision "$precision" $checks --json "$RES/$name.json" > "$RES/$name.log" 2>&1
      echo "exit $? after ${SECONDS}s"
      tail -4 "$RES/$name.log"
      tar czf "$OUT/$TAG.tgz" -C "$RES" .
    done
  done
done
tar czf "$OUT/$TAG.tgz" -C "$RES" .
