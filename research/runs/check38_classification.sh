#!/usr/bin/env bash
# Issue 38's classification cells (docs/revival_default.md), each a
# one-thread process; run two chains at once on 2 cores, as they were run:
#   bash research/runs/check38_classification.sh c4 c1 c2
#   bash research/runs/check38_classification.sh i2 i1
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
PY=${PYTHON:-.venv/bin/python}
# the order runs go in: a chain cut short keeps the candidates first
ALL="bn ps_auto ps_reinit_init ps_keep redo_20 ps_reinit"
OUT=docs/capacity_runs
run() {  # cell name, then capacity_study arguments
    local name=$1; shift
    $PY -m research.capacity_study --task hard_digits --network basicnet \
        --seeds 0 1 2 3 4 5 6 7 --variants $ALL "$@" \
        --json "$OUT/check38_$name.json"
}
[ $# -gt 0 ] || { echo "usage: $0 CELL... (i1 i2 c1 c2 c3 c4)" >&2; exit 2; }
for cell in "$@"; do
    case $cell in
    i1) run i1 --epochs 5 --widths 0.5 --regimes sgd_ft \
            --pretrain hard_digits:adam_l2:10 ;;
    i2) run i2 --epochs 5 --widths 0.5 --regimes sgd_ft \
            --pretrain shapes16:adam_l2:10 ;;
    c1) run c1 --epochs 10 --widths 0.25 --regimes adam_l2 ;;
    c2) run c2 --epochs 10 --widths 0.25 --regimes adam_l2 \
            --pretrain shapes16:sgd:10 ;;
    c3) run c3 --epochs 10 --widths 0.25 --regimes sgd ;;
    c4) run c4 --epochs 10 --widths 0.5 --regimes adam_l2 ;;
    *) echo "$0: unknown cell $cell (i1 i2 c1 c2 c3 c4)" >&2; exit 2 ;;
    esac
done
