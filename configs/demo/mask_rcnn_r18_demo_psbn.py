# The demo's Mask R-CNN with psBN: only the norm type and the hook differ.
_base_ = './mask_rcnn_r18_demo_bn.py'
model = dict(backbone=dict(norm_cfg=dict(type='psBN')))
custom_hooks = [
    dict(type='PostShiftHook', interval=10, window={{_base_.window}})
]
