# The solid5 target finetune with psBN and revival rule (b) of the
# classification study (research/collapse_study/revival.py): at each shift, the
# shifted channel's filter is rescaled to the live median norm and its |γ|
# raised to the live median |γ| (β scaled with it, same threshold).
_base_ = './solid5_target_finetune_psbn.py'
custom_imports = dict(
    imports=['psbn_mmdet', 'research.collapse_study.revival'],
    allow_failed_imports=False)
custom_hooks = [
    dict(type='PostShiftHook', interval=10, window={{_base_.window}}),
    dict(type='RevivalHook', filter='rescale', gamma='live'),
]
