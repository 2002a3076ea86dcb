"""psBN for MMDetection: post-shifted batch normalization against filter collapse.

``import psbn_mmdet`` (or ``custom_imports=dict(imports=['psbn_mmdet'])``)
does exactly this:

* registers :class:`~psbn_mmdet.models.layers.psBN` and
  :class:`~psbn_mmdet.models.layers.psSyncBN` in mmengine's ``MODELS`` as
  ``psBN`` and ``psSyncBN`` (mmcv's ``build_norm_layer`` finds them there);
* allow-lists the classes mmengine checkpoints pickle, for safe
  ``torch.load(weights_only=True)`` on resume (:mod:`psbn_mmdet.io.checkpoint`);
* registers the hooks :class:`~psbn_mmdet.engine.hooks.PostShiftHook` and
  :class:`~psbn_mmdet.engine.hooks.CollapseMonitorHook` in mmengine's
  ``HOOKS``, and the CPU-capable DDP wrapper
  :class:`~psbn_mmdet.engine.dist.CPUAwareDistributedDataParallel` in
  ``MODEL_WRAPPERS``, as soon as mmengine's hook and model stack is imported
  (at once when it already is).  mmengine's ``Runner`` and mmdet's tools
  import that stack before they read a config, so ``custom_imports`` has
  registered everything before any hook is built, while a program that only
  reads checkpoints (the collapse report) never loads the training stack.

The public API is :class:`psBN` (with ``psBN.convert_bn`` / ``psBN.revert``),
:class:`psSyncBN`, :class:`PostShiftController`, :class:`PostShiftHook` and
:class:`CollapseMonitorHook` (the hooks import mmengine's hook stack on first
use).  The layers of the package, each importing only those before it:
``utils`` → ``core`` → ``models`` → ``engine`` → ``io`` → ``analysis`` →
``pruning`` → ``export`` → ``cli`` → ``demo``.
"""
import importlib
import warnings

import wrapt

# mmengine 0.10 imports pkg_resources; its deprecation warning (two lines in
# every process) would bury the tools' one-line error messages.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated',
                        category=UserWarning)

from .core.controller import PostShiftController  # noqa: E402
from .io.checkpoint import allow_mmengine_checkpoints  # noqa: E402
from .models.layers import psBN, psSyncBN  # noqa: E402

__version__ = '0.1.0'

#: module of mmengine's training stack -> ours that registers in its registry
_REGISTERED_WITH = {'mmengine.hooks': 'psbn_mmdet.engine.hooks',
                    'mmengine.model': 'psbn_mmdet.engine.dist'}
_LAZY = {'PostShiftHook': 'psbn_mmdet.engine.hooks',
         'CollapseMonitorHook': 'psbn_mmdet.engine.hooks'}

allow_mmengine_checkpoints()
for _theirs, _ours in _REGISTERED_WITH.items():
    wrapt.register_post_import_hook(
        lambda module, ours=_ours: importlib.import_module(ours), _theirs)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = [
    'psBN', 'psSyncBN', 'PostShiftController', 'PostShiftHook',
    'CollapseMonitorHook'
]
