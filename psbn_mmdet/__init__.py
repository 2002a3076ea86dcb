"""psBN for MMDetection: post-shifted batch normalization against filter collapse.

``import psbn_mmdet`` (or ``custom_imports=dict(imports=['psbn_mmdet'])``)
does exactly three things:

* registers :class:`~psbn_mmdet.norm.psBN` and
  :class:`~psbn_mmdet.norm.psSyncBN` in mmengine's ``MODELS`` as ``psBN`` and
  ``psSyncBN`` (mmcv's ``build_norm_layer`` finds them there);
* registers the hook classes :class:`~psbn_mmdet.hooks.PostShiftHook` and
  :class:`~psbn_mmdet.hooks.CollapseMonitorHook` in mmengine's ``HOOKS``;
* allow-lists the classes mmengine checkpoints pickle, for safe
  ``torch.load(weights_only=True)`` on resume
  (:mod:`psbn_mmdet.checkpoint`).

The CPU-capable DDP wrapper is registered by :mod:`psbn_mmdet.dist`, which
the train and test tools import when they set up a distributed run.
"""
import warnings

# mmengine 0.10 imports pkg_resources; its deprecation warning (two lines in
# every process) would bury the tools' one-line error messages.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated',
                        category=UserWarning)

from mmengine.registry import HOOKS, MODELS  # noqa: E402

from .io.checkpoint import allow_mmengine_checkpoints  # noqa: E402
from .core.controller import PostShiftController  # noqa: E402
from .engine.hooks.post_shift_hook import CollapseMonitorHook, PostShiftHook  # noqa: E402
from .models.layers.psbn import psBN, psSyncBN  # noqa: E402

__version__ = '0.1.0'

MODELS.register_module('psBN', module=psBN)
MODELS.register_module('psSyncBN', module=psSyncBN)
HOOKS.register_module(module=PostShiftHook)
HOOKS.register_module(module=CollapseMonitorHook)
allow_mmengine_checkpoints()

__all__ = [
    'psBN', 'psSyncBN', 'PostShiftController', 'PostShiftHook',
    'CollapseMonitorHook'
]
