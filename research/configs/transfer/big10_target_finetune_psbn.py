# The big10 target finetune with psBN: only the norm type and the hook differ.
_base_ = './big10_target_finetune.py'
model = dict(backbone=dict(norm_cfg=dict(type='psBN')))
custom_hooks = [
    dict(type='PostShiftHook', interval=10, window={{_base_.window}})
]
