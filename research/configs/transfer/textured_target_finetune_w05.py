# The target finetune at 0.5x width (from textured_source_pretrain_w05.py).
_base_ = './textured_target_finetune.py'
load_from = 'work_dirs/transfer/textured_source_pretrain_w05/iter_1200.pth'
base_channels = 16
model = dict(
    backbone=dict(base_channels=base_channels),
    neck=dict(in_channels=[base_channels * 2**i for i in range(4)]))
