# The demo's Mask R-CNN at full width with an R50-FPN backbone, psBN (what the
# test suite trains for an iteration; `make demo` sizes are the R18 ones).
_base_ = './mask_rcnn_r18_demo_psbn.py'
model = dict(
    backbone=dict(depth=50, base_channels=64),
    neck=dict(in_channels=[256, 512, 1024, 2048], out_channels=256),
    rpn_head=dict(in_channels=256, feat_channels=256),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=256),
        bbox_head=dict(in_channels=256, fc_out_channels=1024),
        mask_roi_extractor=dict(out_channels=256),
        mask_head=dict(in_channels=256, conv_out_channels=256)))
