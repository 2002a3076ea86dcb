# The demo's BN finetune with ReDo (research/redo.py), the peer psBN is
# compared with in research.detection_study.demo: every 20 iterations, units dead on
# the batch are recycled (filter re-initialized, outgoing weights zeroed,
# optimizer moments reset).  Run from the repository root.
_base_ = '../../configs/demo/faster_rcnn_r18_demo_bn_finetune.py'
custom_imports = dict(
    imports=['psbn_mmdet', 'research.redo'], allow_failed_imports=False)
custom_hooks = [
    dict(type='CollapseMonitorHook', interval=10, window={{_base_.window}}),
    dict(type='ReDoHook', tau=0.0, period=20),
]
