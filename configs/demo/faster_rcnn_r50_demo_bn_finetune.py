# The BN baseline of faster_rcnn_r50_demo_psbn_finetune.py (monitor only).
_base_ = './faster_rcnn_r50_demo_bn.py'
load_from = 'work_dirs/demo_pretrain/iter_80.pth'
model = dict(backbone=dict(frozen_stages=1, norm_eval=True))
