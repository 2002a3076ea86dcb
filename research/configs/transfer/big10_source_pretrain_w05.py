# The big10 source pretrain at 0.5x width (issue 38's capacity control):
# ResNet-18 base_channels 16, the FPN's inputs scaled with it (heads
# unchanged).
_base_ = './big10_source_pretrain.py'
base_channels = 16
model = dict(
    backbone=dict(base_channels=base_channels),
    neck=dict(in_channels=[base_channels * 2**i for i in range(4)]))
