# The starts of issue 38 (research.detection_study.transfer STARTS): the solid5
# source-pretrained detector trained `max_iters` more BN iterations on the
# SOURCE domain with stem and layer1 frozen and norm_eval=True, at a constant
# lr.  The optimizer here is the healthy start's (SGD + momentum 0.9, lr
# 0.02, wd 1e-4); the collapsed start swaps in Adam lr 2e-3 with coupled L2
# 5e-3 (torch Adam's weight_decay), as research/detection_study/demo.py's STARTS
# do for the demo.
_base_ = './solid5_source_pretrain.py'
load_from = 'work_dirs/screen38/solid5_source_pretrain/iter_2000.pth'
max_iters = 100

model = dict(backbone=dict(frozen_stages=1, norm_eval=True))
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='SGD', lr=0.02, momentum=0.9,
                   weight_decay=1e-4))
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = []  # constant lr
default_hooks = dict(checkpoint=dict(interval=max_iters))
