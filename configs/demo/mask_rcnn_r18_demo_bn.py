# Mask R-CNN on the demo data: the demo's Faster R-CNN
# (faster_rcnn_r18_demo_bn_pretrain.py) plus mmdet's FCN mask head at the
# same 64-channel width, trained from random init with plain BN.
_base_ = './faster_rcnn_r18_demo_bn_pretrain.py'
channels = _base_.model.roi_head.bbox_roi_extractor.out_channels

model = dict(
    type='MaskRCNN',
    data_preprocessor=dict(pad_mask=True),
    roi_head=dict(
        mask_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
            out_channels=channels,
            featmap_strides=[4, 8, 16, 32]),
        mask_head=dict(
            type='FCNMaskHead',
            num_convs=4,
            in_channels=channels,
            conv_out_channels=channels,
            num_classes=5,
            loss_mask=dict(
                type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))),
    # mmdet's Mask R-CNN matches low-quality RoIs, its Faster R-CNN does not
    train_cfg=dict(
        rcnn=dict(assigner=dict(match_low_quality=True), mask_size=28)),
    test_cfg=dict(rcnn=dict(mask_thr_binary=0.5)))

# the same pipelines, annotations with masks
train_pipeline = _base_.train_pipeline
train_pipeline[1].with_mask = True
test_pipeline = _base_.test_pipeline
test_pipeline[2].with_mask = True
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(metric=['bbox', 'segm'])
test_evaluator = val_evaluator
