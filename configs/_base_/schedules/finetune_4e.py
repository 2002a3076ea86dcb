# The finetuning schedule of configs/*_finetune.py: 4 epochs from a
# COCO-trained detector, linear warm-up, lr / 10 after epoch 3 (where
# collapse grows).  The finetune configs take it as
# ``train_cfg = _base_.finetune_train_cfg`` (mmengine allows no key in two
# bases, and the detector's base already holds mmdet's 1x schedule).
finetune_train_cfg = dict(max_epochs=4)
finetune_param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=500),
    dict(type='MultiStepLR', begin=0, end=4, by_epoch=True, milestones=[3],
         gamma=0.1)
]
