# Pre-train a BN Faster R-CNN on the demo data from random init: the checkpoint
# the demo finetunes start from (no download needed).
_base_ = './faster_rcnn_r50_demo_bn.py'
max_iters = 80
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=10),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[60], gamma=0.1)
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
work_dir = 'work_dirs/demo_pretrain'
