#!/usr/bin/env bash
# Every report of issue 13 from one packed queue, into OUTDIR: tables 3, 4, 8, 11, 12 in md, the
# loss curves (--plot) and the paired differences (--plot-diff) as PNG. Reads only (never trains).
# Usage: bash benchmarks/shakespeare_reports.sh STATE_TGZ OUTDIR
set -eu
STATE=${1:?state.tgz}; OUT=${2:?outdir}
. "$(dirname "$0")/unpack_state.sh" "$STATE"
mkdir -p "$OUT"
for spec in "3 shakespeare" "4 shakespeare" "11 shakespeare" "12 shakespeare" "8 shakespeare_ablations"; do
  set -- $spec
  haares report --table "$1" --grid "$2" --format md > "$OUT/table$1.md"
done
haares report --table 3 --grid shakespeare --plot "$OUT/curves.png" --plot-diff "$OUT/diff.png" > /dev/null
haares report --table 8 --grid shakespeare_ablations --plot "$OUT/ablations-curves.png" \
  --plot-diff "$OUT/ablations-diff.png" > /dev/null
haares status > "$OUT/status.txt"
