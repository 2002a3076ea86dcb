# The solid5 target finetune with ReDo on BN (research/redo.py), psBN's peer:
# every 20 iterations, units dead on the batch are recycled.
_base_ = './solid5_target_finetune.py'
custom_imports = dict(
    imports=['psbn_mmdet', 'research.redo'], allow_failed_imports=False)
custom_hooks = [
    dict(type='CollapseMonitorHook', interval=10, window={{_base_.window}}),
    dict(type='ReDoHook', tau=0.0, period=20),
]
