"""psBN for MMDetection: post-shifted batch normalization against filter collapse.

``import psbn_mmdet`` (or ``custom_imports=dict(imports=['psbn_mmdet'])``)
registers ``psBN`` and ``psSyncBN`` in mmengine's ``MODELS`` (found by mmcv's
``build_norm_layer``), the hooks in ``HOOKS``, a CPU-capable DDP wrapper, and
allow-lists mmengine's checkpoint classes for safe ``torch.load``.
"""
import warnings

# mmengine 0.10 imports pkg_resources; its deprecation warning (two lines in
# every process) would bury the tools' one-line error messages.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated',
                        category=UserWarning)

from mmengine.registry import MODELS  # noqa: E402

from .checkpoint import allow_mmengine_checkpoints
from .controller import PostShiftController
from .dist import CPUAwareDistributedDataParallel
from .hooks import CollapseMonitorHook, PostShiftHook
from .norm import psBN, psSyncBN

__version__ = '0.1.0'

MODELS.register_module('psBN', module=psBN)
MODELS.register_module('psSyncBN', module=psSyncBN)
allow_mmengine_checkpoints()

__all__ = [
    'psBN', 'psSyncBN', 'PostShiftController', 'PostShiftHook',
    'CollapseMonitorHook', 'CPUAwareDistributedDataParallel'
]
