# Issue 38's candidate task `big10_long` (research.detection_study.transfer --task
# big10_long), source side: big10's data (the 5 shapes solid or striped, no
# small objects), pretrained 3x longer (big10's 1000 iterations left the
# detector at 0.28 source bbox mAP, its finetune at 0.18 on the target). The
# demo's Faster R-CNN (ResNet-18 at base width 32, the "1x" here) trained from
# random init with BN and SGD on the source domain for 3000 iterations. Data:
# research.detection_study.transfer makes it (TASKS['big10_long'].data).
_base_ = './big10_source_pretrain.py'

max_iters = 3000

train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=100),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.75)], gamma=0.1)
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
