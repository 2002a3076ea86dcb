# The demo's psBN finetune with the research's re-shift counter
# (research/reshifts.py): which shifted channels the controller shifts again,
# saved in checkpoints under 'reshifts'.  Run from the repository root.
_base_ = '../../configs/demo/faster_rcnn_r18_demo_psbn_finetune.py'
custom_imports = dict(
    imports=['psbn_mmdet', 'research.reshifts'], allow_failed_imports=False)
custom_hooks = [*_base_.custom_hooks, dict(type='ReshiftCounterHook')]
