# Issue 38's candidate task `solid5` (research.detection_study.transfer --task solid5),
# source side: the 5 shapes, solid (in random colours): 5 classes, no small
# objects, source -> target shift kept, 160x120. The demo's Faster R-CNN
# (ResNet-18 at base width 32, the "1x" here) trained from random init with BN
# and SGD on the source domain for 2000 iterations. Data:
# research.detection_study.transfer makes it (TASKS['solid5'].data).
_base_ = './big10_source_pretrain.py'

data_root = 'data/solid5/source/'
# research.detection_study.transfer.TASKS['solid5'] (a test checks they agree)
classes = tuple(f'solid_{shape}'
                for shape in ('circle', 'square', 'triangle', 'star', 'cross'))
metainfo = dict(classes=classes)
max_iters = 2000

model = dict(roi_head=dict(bbox_head=dict(num_classes=len(classes))))
train_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo))
val_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo))
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
