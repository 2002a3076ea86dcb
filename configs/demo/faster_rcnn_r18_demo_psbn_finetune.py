# The same finetune with psBN: dead channels are post-shifted at the end of
# every detection window.  Only the norm type and the hook differ from BN's.
_base_ = './faster_rcnn_r18_demo_bn_finetune.py'
model = dict(backbone=dict(norm_cfg=dict(type='psBN')))
custom_hooks = [
    dict(type='PostShiftHook', interval=10, window={{_base_.window}})
]
