# Finetune a checkpoint that arrives with dead channels, as users finetune:
# mmdet's SGD recipe (momentum 0.9, weight decay 1e-4; stem and layer1 frozen,
# BN statistics frozen) with BN.  The checkpoint is the demo's pretrained
# detector after 100 iterations of faster_rcnn_r18_demo_bn_finetune.py (Adam
# with coupled L2): about 40% of its trained stages' pre-ReLU channels are
# dead when this finetune starts (the inherited collapse of issue 29).
# research.detection_study.demo's cell `--starts collapsed --regimes sgd` is this
# finetune (tests/research/test_detection_study_demo.py checks they agree).
_base_ = './faster_rcnn_r18_demo_bn_finetune.py'
load_from = 'work_dirs/faster_rcnn_r18_demo_bn_finetune/iter_100.pth'
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='SGD', lr=0.02, momentum=0.9,
                   weight_decay=1e-4))
