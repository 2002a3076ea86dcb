# Issue 23's transfer task, source side: the demo's Faster R-CNN (ResNet-18 at
# base width 32, the "1x" width here; FPN and heads at 64 channels) trained
# from random init with BN and SGD on the textured task's source domain
# (psbn_mmdet.demo.shapes: 20 classes of shape x texture in random colours,
# clutter, small and touching objects) at 160x120.
# Data: python tools/make_demo_data.py --task textured --domain source \
#     --image-size 160 120 --num-train 2000 --num-val 500 --out-dir data/textured/source
# Run from the repository root (research.detection_study.transfer runs it).
_base_ = '../../../configs/demo/faster_rcnn_r18_demo_bn_pretrain.py'

data_root = 'data/textured/source/'
# psbn_mmdet.demo.shapes.TEXTURED_CLASSES (a test checks they agree)
classes = tuple(f'{texture}_{shape}'
                for shape in ('circle', 'square', 'triangle', 'star', 'cross')
                for texture in ('solid', 'stripes', 'checker', 'rings'))
metainfo = dict(classes=classes)
image_scale = (160, 120)
max_iters = 1200
base_channels = 32  # the width: 16 (0.5x), 32 (1x), 64 (2x)

model = dict(
    backbone=dict(base_channels=base_channels),
    neck=dict(in_channels=[base_channels * 2**i for i in range(4)]),
    # objects of 10-120 px: anchors of 12-192 px (strides 4-64)
    rpn_head=dict(anchor_generator=dict(scales=[3])),
    roi_head=dict(bbox_head=dict(num_classes=len(classes))))

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
train_dataloader = dict(dataset=dict(
    data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(batch_size=4, dataset=dict(
    data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=100),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.75)], gamma=0.1)
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
