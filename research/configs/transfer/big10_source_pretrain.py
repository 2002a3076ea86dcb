# Issue 38's candidate task `big10` (research.detection_study.transfer --task big10),
# source side: the textured task made easier, 10 classes (the 5 shapes, solid
# or striped) and no small objects (psbn_mmdet.demo.shapes, small=False),
# source -> target shift kept, 160x120.  The demo's Faster R-CNN (ResNet-18
# at base width 32, the "1x" here) trained from random init with BN and SGD
# on the source domain, as textured_source_pretrain.py.
# Data: research.detection_study.transfer makes it (make_demo_data(task='textured',
#     domain='source', classes=<these>, small=False, num_train=1500,
#     num_val=200, image_size=(160, 120)) into data/big10/source).
_base_ = './textured_source_pretrain.py'

data_root = 'data/big10/source/'
# research.detection_study.transfer.TASKS['big10'].classes (a test checks they agree)
classes = tuple(f'{texture}_{shape}'
                for shape in ('circle', 'square', 'triangle', 'star', 'cross')
                for texture in ('solid', 'stripes'))
metainfo = dict(classes=classes)
max_iters = 1000

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
