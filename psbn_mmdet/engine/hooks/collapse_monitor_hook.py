"""``CollapseMonitorHook``: psBN's per-stage counts for a BN run, never shifting.

::

    custom_hooks = [dict(type='CollapseMonitorHook', interval=50)]

The same scalars as :class:`~psbn_mmdet.engine.hooks.PostShiftHook` (a BN
baseline logs what a psBN run logs).
"""
from __future__ import annotations

from mmengine.registry import HOOKS

from ...core.statistics import DEFAULT_WINDOW
from .post_shift_hook import PostShiftHook


@HOOKS.register_module()
class CollapseMonitorHook(PostShiftHook):
    """The same scalars as :class:`PostShiftHook`, never shifting (BN runs)."""

    def __init__(self, interval: int = 50,
                 window: int | None = DEFAULT_WINDOW) -> None:
        super().__init__(interval=interval, window=window, shift=False)

    def _check_layers(self, runner) -> None:
        """A model without BN has nothing to count: said once."""
        if not self.controller.pre_relu:
            runner.logger.warning(
                f'{type(self).__name__}: the model has no pre-ReLU BN layer '
                f'({len(self.controller.bns)} BN layer(s) in all): there are '
                'no dead channels to count')
