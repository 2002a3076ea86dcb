# A small Faster R-CNN trained from random init with plain BN on the demo data:
# the detector `make demo` finetunes, and the base of every demo config.
# ResNet-18 at half width (base_channels=32), a 64-channel FPN and RoI heads,
# batch 4 at 256x192: it learns on 2 CPU cores in minutes, nothing downloaded.
# Data: python tools/make_demo_data.py --num-train 400 --num-val 64
_base_ = '../faster_rcnn_r50_bn.py'

data_root = 'data/demo/'
metainfo = dict(classes=('circle', 'square', 'triangle', 'ellipse', 'star'))
image_scale = (256, 192)
max_iters = 500
window = 10  # detection window of the hooks (psBN's default), in iterations

model = dict(
    backbone=dict(
        depth=18,
        base_channels=32,
        init_cfg=None,  # random init: no torchvision download here
        frozen_stages=-1,
        norm_eval=False,  # random init: BN statistics must train too
        # mmdet zero-inits every block's last γ; from random init that would
        # count all pre-add channels as |γ| < 1e-3 and hide real collapse
        zero_init_residual=False),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=64),
    rpn_head=dict(
        in_channels=64, feat_channels=64,
        anchor_generator=dict(scales=[4])),  # objects of 14-112 px
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=5)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=500),
        rcnn=dict(sampler=dict(num=256))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=4),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

train_cfg = dict(
    _delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
    val_interval=max_iters)
param_scheduler = [
    # a shorter warmup (10 iterations from 0.01) let a loss spike kill the
    # RoI head's ReLUs for good: bbox mAP 0 after 500 iterations
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=100),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.75)], gamma=0.1)
]
optim_wrapper = dict(
    optimizer=dict(lr=0.02), clip_grad=dict(max_norm=35, norm_type=2))
auto_scale_lr = dict(base_batch_size=4)

custom_hooks = [dict(type='CollapseMonitorHook', interval=10, window=window)]
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(by_epoch=False, interval=max_iters),
    visualization=dict(draw=False))
log_processor = dict(by_epoch=False, window_size=10)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
