# Finetune a COCO-trained detector for a short schedule (where collapse grows).
_base_ = ['./faster_rcnn_r101_bn.py', './_base_/schedules/finetune_4e.py']
load_from = 'https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/faster_rcnn_r101_fpn_1x_coco/faster_rcnn_r101_fpn_1x_coco_20200130-f513f705.pth'  # noqa: E501
train_cfg = _base_.finetune_train_cfg
param_scheduler = _base_.finetune_param_scheduler
