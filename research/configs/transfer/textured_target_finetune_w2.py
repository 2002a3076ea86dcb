# The target finetune at 2x width (from textured_source_pretrain_w2.py).
_base_ = './textured_target_finetune.py'
load_from = 'work_dirs/transfer/textured_source_pretrain_w2/iter_1200.pth'
base_channels = 64
model = dict(
    backbone=dict(base_channels=base_channels),
    neck=dict(in_channels=[base_channels * 2**i for i in range(4)]))
