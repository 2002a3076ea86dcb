# The same finetune of the collapsed checkpoint with psBN: at the end of every
# detection window its dead channels are revived (the default revival,
# 'reinit_init': a fresh filter at init scale, γ = 1, outgoing weights zeroed).
# Only the norm type and the hook differ from BN's.
_base_ = './faster_rcnn_r18_demo_bn_inherited.py'
model = dict(backbone=dict(norm_cfg=dict(type='psBN')))
custom_hooks = [
    dict(type='PostShiftHook', interval=10, window={{_base_.window}})
]
