# Issue 38's target finetune on big10_long: a start checkpoint
# (big10_long_source_start.py, healthy or collapsed) finetuned on the target
# domain (200 train images) with mmdet's finetune recipe: SGD + momentum 0.9,
# lr 0.02, weight decay 1e-4, stem and layer1 frozen, BN statistics frozen
# (norm_eval=True), lr x0.1 at 75% of the iterations; 200 iterations of batch 4
# = 4 epochs.
_base_ = './big10_target_finetune.py'
load_from = 'work_dirs/screen38/big10_long_start_healthy/iter_100.pth'
