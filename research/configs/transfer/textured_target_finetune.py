# Issue 23's transfer task, target side: the source-pretrained detector
# (textured_source_pretrain.py) finetuned on the target domain (the same 20
# classes, another appearance: pale objects with light texture lines, a warm
# tint, textured backgrounds, more clutter and noise) as mmdet finetunes:
# stem and layer1 frozen, BN statistics frozen (norm_eval=True).  The
# optimizer here is the no-collapse control (SGD + momentum, lr 0.01, wd
# 1e-4, constant); research.detection_study.transfer swaps in the collapse regimes.
# Data: python tools/make_demo_data.py --task textured --domain target \
#     --image-size 160 120 --num-train 400 --num-val 1000 --out-dir data/textured/target
_base_ = './textured_source_pretrain.py'
data_root = 'data/textured/target/'
load_from = 'work_dirs/transfer/textured_source_pretrain/iter_1200.pth'
max_iters = 200

model = dict(backbone=dict(frozen_stages=1, norm_eval=True))
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='SGD', lr=0.01, momentum=0.9,
                   weight_decay=1e-4))
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = []  # constant lr
default_hooks = dict(checkpoint=dict(interval=max_iters))
