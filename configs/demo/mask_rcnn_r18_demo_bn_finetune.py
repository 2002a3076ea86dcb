# The demo's Mask R-CNN finetuned as the Faster R-CNN demo finetune
# (faster_rcnn_r18_demo_bn_finetune.py): Adam with coupled L2, stem and
# layer1 frozen, BN statistics frozen, where BN-ReLU channels die.
# Pretrain first: python tools/train.py configs/demo/mask_rcnn_r18_demo_bn.py
_base_ = './mask_rcnn_r18_demo_bn.py'
load_from = 'work_dirs/mask_rcnn_r18_demo_bn/iter_500.pth'
max_iters = 100

model = dict(backbone=dict(frozen_stages=1, norm_eval=True))
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='Adam', lr=2e-3, weight_decay=5e-3))
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = []  # constant lr
default_hooks = dict(checkpoint=dict(interval=max_iters))
