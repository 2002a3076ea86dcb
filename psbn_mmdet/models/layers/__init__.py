"""psBN and psSyncBN: BatchNorm that can post-shift dead channels back.

Importing this package registers both in mmengine's ``MODELS``, where mmcv's
``build_norm_layer`` finds ``norm_cfg=dict(type='psBN')``.
"""
from .psbn import (PSBN_OPTIONS, PSBN_TYPES, PostShiftMixin, psBN, psSyncBN,
                   restore_post_shift)

__all__ = ['PSBN_OPTIONS', 'PSBN_TYPES', 'PostShiftMixin', 'psBN', 'psSyncBN',
           'restore_post_shift']
