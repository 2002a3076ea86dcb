# Finetune the demo pre-trained detector with psBN, as mmdet finetunes: frozen
# stem and layer1, BN statistics frozen (norm_eval=True), γ and β trained.
# Make the checkpoint first: python tools/train.py configs/demo/faster_rcnn_r50_demo_bn_pretrain.py
_base_ = './faster_rcnn_r50_demo_psbn.py'
load_from = 'work_dirs/demo_pretrain/iter_80.pth'
model = dict(backbone=dict(frozen_stages=1, norm_eval=True))
