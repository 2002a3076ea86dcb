# The Mask R-CNN demo finetune with psBN: only the norm type and the hook differ.
_base_ = './mask_rcnn_r18_demo_bn_finetune.py'
model = dict(backbone=dict(norm_cfg=dict(type='psBN')))
custom_hooks = [
    dict(type='PostShiftHook', interval=10, window={{_base_.window}})
]
