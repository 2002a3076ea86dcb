#!/usr/bin/env bash
# Issue 38's detection cells D0-D2 (docs/revival_default.md, "Detection
# cells"), two one-thread runs at a time on 2 cores, as they were run:
#   bash research/runs/check38_detection.sh d1 d0 d2
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
PY=${PYTHON:-.venv/bin/python}
NORMS="BN psBN_shift psBN_reinit_init psBN_auto ReDo"
run() {  # cell name, start, regime
    $PY -m research.detection_study.transfer --task solid5 --work-dirs work_dirs/screen38 \
        --starts "$2" --regimes "$3" --norms $NORMS \
        --seeds 0 1 2 3 4 5 6 7 --processes 2 --reuse \
        --json "docs/transfer_runs/d38_$1.json"
}
[ $# -gt 0 ] || { echo "usage: $0 CELL... (d0 d1 d2)" >&2; exit 2; }
for cell in "$@"; do
    case $cell in
    d0) run d0 healthy recipe ;;
    d1) run d1 collapsed recipe ;;
    d2) run d2 healthy adam_l2 ;;
    *) echo "$0: unknown cell $cell (d0 d1 d2)" >&2; exit 2 ;;
    esac
done
