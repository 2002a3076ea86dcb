"""``CollapseMonitorHook``: psBN's per-stage counts for a BN run, never shifting.

::

    custom_hooks = [dict(type='CollapseMonitorHook', interval=50)]

The same scalars as :class:`~psbn_mmdet.engine.hooks.PostShiftHook` (a BN
baseline logs what a psBN run logs).  In a run that also has a
``PostShiftHook`` (a psBN config appending it to a BN base's
``custom_hooks``), the monitor stands down with one line: the
``PostShiftHook`` already counts and logs the same scalars from the same
statistics, and a second controller on those layers would reset their
window statistics before the reviving one reads them.
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
        #: True when the run's PostShiftHook does the counting
        self.standing_down = False

    def before_train(self, runner) -> None:
        reviving = [hook for hook in runner.hooks
                    if isinstance(hook, PostShiftHook)
                    and not isinstance(hook, CollapseMonitorHook)]
        if reviving:
            self.standing_down = True
            runner.logger.info(
                f'{type(self).__name__}: this run also has '
                f'{type(reviving[0]).__name__}, which counts and logs the '
                'same psbn/* scalars: the monitor stands down')
            return
        super().before_train(runner)

    def after_train(self, runner) -> None:
        if not self.standing_down:
            super().after_train(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if not self.standing_down:
            super().after_train_iter(runner, batch_idx, data_batch, outputs)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if not self.standing_down:
            super().before_save_checkpoint(runner, checkpoint)

    def _check_layers(self, runner) -> None:
        """A model without BN has nothing to count: said once."""
        if not self.controller.pre_relu:
            runner.logger.warning(
                f'{type(self).__name__}: the model has no pre-ReLU BN layer '
                f'({len(self.controller.bns)} BN layer(s) in all): there are '
                'no dead channels to count')
