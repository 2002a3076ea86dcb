# The BN baseline of faster_rcnn_r50_demo_psbn.py: plain BN, the same scalars
# logged by the monitor-only hook.
_base_ = './faster_rcnn_r50_demo_psbn.py'
model = dict(backbone=dict(norm_cfg=dict(_delete_=True, type='BN', requires_grad=True)))
custom_hooks = [dict(type='CollapseMonitorHook', interval=5, window={{_base_.window}})]
