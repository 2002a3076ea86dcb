# Finetune the demo's pretrained detector with BN where BN-ReLU channels die:
# Adam with coupled L2 (torch's Adam adds weight_decay * w to the gradient) on
# mmdet's finetuning setup (stem and layer1 frozen, BN statistics frozen).
# Pretrain first: python tools/train.py configs/demo/faster_rcnn_r18_demo_bn_pretrain.py
_base_ = './faster_rcnn_r18_demo_bn_pretrain.py'
load_from = 'work_dirs/faster_rcnn_r18_demo_bn_pretrain/iter_500.pth'
max_iters = 100  # BN loses half of layer4 by iteration 40; the pair fits 6 min

model = dict(backbone=dict(frozen_stages=1, norm_eval=True))
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='Adam', lr=2e-3, weight_decay=5e-3))
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = []  # constant lr
default_hooks = dict(checkpoint=dict(interval=max_iters))
