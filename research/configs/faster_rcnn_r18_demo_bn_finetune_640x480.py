# The demo's BN finetune, evaluated (and timed by research.prune_benchmark)
# at 640x480 instead of 256x192: 6.25x the pixels, so that layer4's maps are
# 15x20 instead of 6x8.  Training is unchanged.  Run from the repository root.
_base_ = '../../configs/demo/faster_rcnn_r18_demo_bn_finetune.py'
test_pipeline = _base_.test_pipeline
test_pipeline[1].scale = (640, 480)  # Resize
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
