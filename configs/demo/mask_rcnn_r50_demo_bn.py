# The BN baseline of mask_rcnn_r50_demo_psbn.py: plain BN, the same scalars
# logged by the monitor-only hook.
_base_ = './mask_rcnn_r50_demo_psbn.py'
model = dict(backbone=dict(norm_cfg=dict(type='BN')))
custom_hooks = [dict(type='CollapseMonitorHook', interval=10, window={{_base_.window}})]
