#!/usr/bin/env bash
# The main demo: finetune a psBN detector on the demo data, evaluate, report collapse.
# Usage: tools/run_demo.sh [CONFIG] [WORK_DIR]   (after tools/setup_env.sh and make_demo_data.py)
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-configs/demo/faster_rcnn_r50_psbn_demo.py}
WORK_DIR=${2:-work_dirs/demo_faster_rcnn_r50_psbn}
PY=${PY:-.venv/bin/python}

echo "== training $CONFIG (log every 5 iterations; CocoMetric on the val split at the end)"
$PY tools/train.py "$CONFIG" --work-dir "$WORK_DIR"
CHECKPOINT=$(cat "$WORK_DIR/last_checkpoint")
echo "== collapse report of $CHECKPOINT"
$PY tools/collapse_report.py "$CHECKPOINT" --config "$CONFIG" \
    --data-config "$CONFIG" --num-images 16 \
    --json "$WORK_DIR/collapse_report.json" --plot-dir "$WORK_DIR/collapse_plots"
