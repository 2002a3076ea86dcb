# Finetune a COCO-trained detector for a short schedule (where collapse grows).
_base_ = './mask_rcnn_r50_bn.py'
load_from = 'https://download.openmmlab.com/mmdetection/v2.0/mask_rcnn/mask_rcnn_r50_fpn_1x_coco/mask_rcnn_r50_fpn_1x_coco_20200205-d4b0c5d6.pth'  # noqa: E501
train_cfg = dict(max_epochs=4)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=500),
    dict(type='MultiStepLR', begin=0, end=4, by_epoch=True, milestones=[3],
         gamma=0.1)
]
