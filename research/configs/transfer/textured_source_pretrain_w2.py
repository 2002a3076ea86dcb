# The source pretrain at 2x width: ResNet-18 base_channels 64, the FPN's
# inputs scaled with it (heads unchanged).
_base_ = './textured_source_pretrain.py'
base_channels = 64
model = dict(
    backbone=dict(base_channels=base_channels),
    neck=dict(in_channels=[base_channels * 2**i for i in range(4)]))
