#!/usr/bin/env bash
# `make demo`: a checkpoint that arrives with dead channels, finetuned as
# users finetune (mmdet's SGD recipe) with BN and with psBN, side by side.
#   1. the demo data (400 train and 64 val images, generated)
#   2. a Faster R-CNN pretrained with BN from random init; reused when its
#      work dir holds the finished run's checkpoint
#   3. the inherited collapse: that checkpoint finetuned 100 iterations under
#      Adam with coupled L2, which kills about 40% of the trained stages'
#      BN-ReLU channels; reused when finished
#   4. the collapsed checkpoint finetuned twice with the same seed under SGD
#      (momentum 0.9, weight decay 1e-4; stem and layer1 frozen,
#      norm_eval=True), BN then psBN; CocoMetric at the end of each
#   5. one comparison table, dead channels over iterations and the collapse
#      report's plots (python -m psbn_mmdet.demo compare); under the table,
#      the committed 8-seed benchmark's paired differences ($EVIDENCE), so
#      that one seed is read against them, and those of the committed cell
#      where collapse costs mAP ($COSTLY: issue 38's D1, a transfer task
#      whose 2000-iteration source pretrain does not fit the demo's time)
# Usage: tools/run_demo.sh   (after tools/setup_env.sh; PY=python to use another)
# Environment: WORK_DIRS (default work_dirs), NUM_IMAGES (val images for the
# dead-channel criterion, default 64).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK_DIRS=${WORK_DIRS:-work_dirs}
NUM_IMAGES=${NUM_IMAGES:-64}
PRETRAIN=faster_rcnn_r18_demo_bn_pretrain
COLLAPSE=faster_rcnn_r18_demo_bn_finetune
FINETUNE_BN=faster_rcnn_r18_demo_bn_inherited
FINETUNE_PSBN=faster_rcnn_r18_demo_psbn_inherited
# written by the render command of docs/demo_finetune.md (--evidence)
EVIDENCE=docs/demo_finetune_runs/evidence_inherited.json
# written by the render command of docs/revival_default.md (--evidence)
COSTLY=docs/transfer_runs/evidence_d1.json
START=$SECONDS

step() {
    local elapsed=$((SECONDS - START))
    printf '\n== [%d:%02d] %s\n' $((elapsed / 60)) $((elapsed % 60)) "$*"
}

# train NAME LOAD_FROM: the run of configs/demo/NAME.py, reused when finished;
# prints its checkpoint on the last line
reuse_or_train() {
    local name=$1 options=()
    [ -n "${2:-}" ] && options=(--cfg-options "load_from=$2")
    if checkpoint=$($PY -m psbn_mmdet.demo check-pretrained \
            "configs/demo/$name.py" --work-dir "$WORK_DIRS/$name"); then
        echo "reusing $checkpoint (delete $WORK_DIRS/$name to train again)" >&2
    else
        $PY tools/train.py "configs/demo/$name.py" \
            --work-dir "$WORK_DIRS/$name" "${options[@]}" >&2
        checkpoint=$($PY -m psbn_mmdet.demo check-pretrained \
            "configs/demo/$name.py" --work-dir "$WORK_DIRS/$name")
    fi
    echo "$checkpoint"
}

step "1/5 demo data"
$PY tools/make_demo_data.py --num-train 400 --num-val 64

step "2/5 pretrained BN detector ($PRETRAIN, from random init; log every 10 iterations)"
PRETRAINED=$(reuse_or_train "$PRETRAIN")

step "3/5 the checkpoint that arrives collapsed ($COLLAPSE: Adam + coupled L2 from $PRETRAINED)"
COLLAPSED=$(reuse_or_train "$COLLAPSE" "$PRETRAINED")

for name in "$FINETUNE_BN" "$FINETUNE_PSBN"; do
    step "4/5 finetune $name from $COLLAPSED (SGD)"
    $PY tools/train.py "configs/demo/$name.py" --work-dir "$WORK_DIRS/$name" \
        --cfg-options "load_from=$COLLAPSED"
done

step "5/5 comparison"
$PY -m psbn_mmdet.demo compare \
    "BN=$WORK_DIRS/$FINETUNE_BN" "psBN=$WORK_DIRS/$FINETUNE_PSBN" \
    --pretrained "$WORK_DIRS/$COLLAPSE" --pretrained-label collapsed \
    --num-images "$NUM_IMAGES" --out-dir "$WORK_DIRS/demo" \
    --evidence "$EVIDENCE" "$COSTLY"
step "done"
