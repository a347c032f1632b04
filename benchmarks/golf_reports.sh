#!/usr/bin/env bash
# The golf grid's reports (issue 15) from one packed queue, into OUTDIR: its own report (loss and bits
# per byte, paired deltas against Standard), its cost (table 11) and HAARES's time to Standard's best
# (table 12) in md, the loss curves (--plot) and the paired differences (--plot-diff) as PNG, and the
# queue's status. Reads only (never trains).
# Usage: bash benchmarks/golf_reports.sh STATE_TGZ OUTDIR
set -eu
STATE=${1:?state.tgz}; OUT=${2:?outdir}
. "$(dirname "$0")/unpack_state.sh" "$STATE"
mkdir -p "$OUT"
haares report --grid golf --format md > "$OUT/report.md"
haares report --table 11 --grid golf --format md > "$OUT/table11.md"
haares report --table 12 --grid golf --format md > "$OUT/table12.md"
haares report --grid golf --plot "$OUT/curves.png" --plot-diff "$OUT/diff.png" > /dev/null
haares status --grid golf > "$OUT/status.txt"
