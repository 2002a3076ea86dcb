#!/usr/bin/env bash
# Issue 38's classification cells (docs/revival_default.md), as two chains
# of one-thread processes (run both at once on 2 cores):
#   bash research/runs/check38_classification.sh a   # C4, C1, C3
#   bash research/runs/check38_classification.sh b   # I2, I1, C2
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
PY=${PYTHON:-.venv/bin/python}
ALL="bn ps_keep ps_reinit ps_reinit_init ps_auto redo_20"
SEEDS="0 1 2 3 4 5 6 7"
OUT=docs/capacity_runs
cell() {  # name, then capacity_study arguments
    local name=$1; shift
    $PY -m research.capacity_study --task hard_digits --network basicnet \
        --seeds $SEEDS "$@" --json "$OUT/check38_$name.json"
}
case ${1:?a or b} in
a)
    cell c4 --epochs 10 --widths 0.5 --regimes adam_l2 --variants $ALL
    cell c1 --epochs 10 --widths 0.25 --regimes adam_l2 --variants $ALL
    cell c3 --epochs 10 --widths 0.25 --regimes sgd --variants $ALL ;;
b)
    for spec in i2:shapes16:adam_l2:10 i1:hard_digits:adam_l2:10; do
        cell "${spec%%:*}" --epochs 5 --widths 0.5 --regimes sgd_ft \
            --pretrain "${spec#*:}" --variants $ALL
    done
    cell c2 --epochs 10 --widths 0.25 --regimes adam_l2 \
        --pretrain shapes16:sgd:10 --variants $ALL ;;
*) echo "usage: $0 a|b" >&2; exit 2 ;;
esac
