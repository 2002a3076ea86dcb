# Issue 38's target finetune on big10: a start checkpoint
# (big10_source_start.py, healthy or collapsed) finetuned on the target domain
# (200 train images) with mmdet's finetune recipe: SGD + momentum 0.9, lr 0.02,
# weight decay 1e-4, stem and layer1 frozen, BN statistics frozen
# (norm_eval=True), lr x0.1 at 75% of the iterations; 200 iterations of batch 4
# = 4 epochs.
_base_ = './big10_source_pretrain.py'
data_root = 'data/big10/target/'
load_from = 'work_dirs/screen38/big10_start_healthy/iter_100.pth'
max_iters = 200

model = dict(backbone=dict(frozen_stages=1, norm_eval=True))
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='SGD', lr=0.02, momentum=0.9,
                   weight_decay=1e-4))
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.75)], gamma=0.1)
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
