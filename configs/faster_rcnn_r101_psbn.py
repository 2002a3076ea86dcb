_base_ = 'mmdet::faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py'
custom_imports = dict(imports=['psbn_mmdet'], allow_failed_imports=False)
model = dict(backbone=dict(norm_cfg=dict(type='psBN', requires_grad=True)))
custom_hooks = [dict(type='PostShiftHook', interval=50)]
