# The demo detector at full width with an R50-FPN backbone and psBN, trained
# 40 iterations from random init at batch 2: what the tests and the overhead
# benchmark run (too short to learn; `make demo` uses the R18 configs).
_base_ = './faster_rcnn_r18_demo_bn_pretrain.py'
max_iters = 40
window = 10

model = dict(
    backbone=dict(
        depth=50, base_channels=64,
        norm_cfg=dict(type='psBN', window=window)),
    neck=dict(in_channels=[256, 512, 1024, 2048], out_channels=256),
    rpn_head=dict(in_channels=256, feat_channels=256),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=256),
        bbox_head=dict(in_channels=256, fc_out_channels=1024)))
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(base_batch_size=2)
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=10),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[30], gamma=0.1)
]
custom_hooks = [dict(type='PostShiftHook', interval=5)]
default_hooks = dict(
    logger=dict(interval=5), checkpoint=dict(interval=max_iters))
log_processor = dict(window_size=5)
