# The BN baseline of mask_rcnn_r50_psbn_demo.py: plain BN, the same scalars
# logged by the monitor-only hook.
_base_ = './mask_rcnn_r50_psbn_demo.py'
model = dict(backbone=dict(norm_cfg=dict(type='BN')))
custom_hooks = [dict(type='CollapseMonitorHook', interval=10, window={{_base_.window}})]
