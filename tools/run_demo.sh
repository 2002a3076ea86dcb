#!/usr/bin/env bash
# `make demo`: one small detector finetuned with BN and with psBN, side by side.
#   1. the demo data (400 train and 64 val images, generated)
#   2. a Faster R-CNN pretrained with BN from random init; reused when its
#      work dir holds the finished run's checkpoint
#   3. finetuned twice from that checkpoint with the same seed, BN then psBN,
#      in a regime where BN-ReLU channels die; CocoMetric at the end of each
#   4. one comparison table, dead channels over iterations and the collapse
#      report's plots (python -m psbn_mmdet.demo compare); under the table,
#      the committed 8-seed benchmark's paired differences ($EVIDENCE), so
#      that one seed is read against them
# Usage: tools/run_demo.sh   (after tools/setup_env.sh; PY=python to use another)
# Environment: WORK_DIRS (default work_dirs), NUM_IMAGES (val images for the
# dead-channel criterion, default 64).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK_DIRS=${WORK_DIRS:-work_dirs}
NUM_IMAGES=${NUM_IMAGES:-64}
PRETRAIN=faster_rcnn_r18_demo_bn_pretrain
FINETUNE_BN=faster_rcnn_r18_demo_bn_finetune
FINETUNE_PSBN=faster_rcnn_r18_demo_psbn_finetune
# python -m research.transfer_study --from-json docs/transfer_runs/bench_*.json --evidence ...
EVIDENCE=docs/transfer_runs/evidence.json
START=$SECONDS

step() {
    local elapsed=$((SECONDS - START))
    printf '\n== [%d:%02d] %s\n' $((elapsed / 60)) $((elapsed % 60)) "$*"
}

step "1/4 demo data"
$PY tools/make_demo_data.py --num-train 400 --num-val 64

step "2/4 pretrained BN detector ($PRETRAIN)"
if CHECKPOINT=$($PY -m psbn_mmdet.demo check-pretrained \
        "configs/demo/$PRETRAIN.py" --work-dir "$WORK_DIRS/$PRETRAIN"); then
    echo "reusing $CHECKPOINT (delete $WORK_DIRS/$PRETRAIN to pretrain again)"
else
    echo "pretraining from random init (log every 10 iterations)"
    $PY tools/train.py "configs/demo/$PRETRAIN.py" \
        --work-dir "$WORK_DIRS/$PRETRAIN"
    CHECKPOINT=$($PY -m psbn_mmdet.demo check-pretrained \
        "configs/demo/$PRETRAIN.py" --work-dir "$WORK_DIRS/$PRETRAIN")
fi

for name in "$FINETUNE_BN" "$FINETUNE_PSBN"; do
    step "3/4 finetune $name from $CHECKPOINT"
    $PY tools/train.py "configs/demo/$name.py" --work-dir "$WORK_DIRS/$name" \
        --cfg-options "load_from=$CHECKPOINT"
done

step "4/4 comparison"
$PY -m psbn_mmdet.demo compare \
    "BN=$WORK_DIRS/$FINETUNE_BN" "psBN=$WORK_DIRS/$FINETUNE_PSBN" \
    --pretrained "$WORK_DIRS/$PRETRAIN" --num-images "$NUM_IMAGES" \
    --out-dir "$WORK_DIRS/demo" --evidence "$EVIDENCE"
step "done"
