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

from mmengine.registry import HOOKS, MODELS  # noqa: E402

from .checkpoint import allow_mmengine_checkpoints  # noqa: E402
from .controller import PostShiftController  # noqa: E402
from .norm import psBN, psSyncBN  # noqa: E402

__version__ = '0.1.0'

MODELS.register_module('psBN', module=psBN)
MODELS.register_module('psSyncBN', module=psSyncBN)
allow_mmengine_checkpoints()


def _lazy_hook(name: str):
    """Registry entry that imports ``.hooks`` (and mmengine's runner stack,
    about a second) only when a config builds the hook, so tools that only
    read checkpoints start fast."""

    def build(**kwargs):
        from . import hooks
        return getattr(hooks, name)(**kwargs)

    build.__name__ = name
    build.__doc__ = f'Builds :class:`psbn_mmdet.hooks.{name}`.'
    return build


for _name in ('PostShiftHook', 'CollapseMonitorHook'):
    HOOKS.register_module(_name, module=_lazy_hook(_name))


def __getattr__(name: str):
    if name in ('PostShiftHook', 'CollapseMonitorHook'):
        from . import hooks
        return getattr(hooks, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = [
    'psBN', 'psSyncBN', 'PostShiftController', 'PostShiftHook',
    'CollapseMonitorHook'
]
