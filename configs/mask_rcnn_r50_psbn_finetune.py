# Finetune a COCO-trained detector for a short schedule (where collapse grows).
_base_ = ['./mask_rcnn_r50_psbn.py', './_base_/schedules/finetune_4e.py']
load_from = 'https://download.openmmlab.com/mmdetection/v2.0/mask_rcnn/mask_rcnn_r50_fpn_1x_coco/mask_rcnn_r50_fpn_1x_coco_20200205-d4b0c5d6.pth'  # noqa: E501
train_cfg = _base_.finetune_train_cfg
param_scheduler = _base_.finetune_param_scheduler
