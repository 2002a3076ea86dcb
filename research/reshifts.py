"""Re-shifts: channels the controller shifts again, and when (research bookkeeping).

:class:`ReshiftCounter` follows the controller's windows through its
``callbacks`` (:class:`psbn_mmdet.core.PostShiftController`): a channel
shifted again was revived and died again.  It counts those re-shifts, the
ones exactly one window after the channel's previous shift, and the steps
between.  :class:`ReshiftCounterHook` does the same in an mmengine run (the
detection benchmark's research configs add it after ``PostShiftHook``) and
saves the counts in checkpoints under ``reshifts``.
"""
from __future__ import annotations

import torch

from psbn_mmdet.core import WindowResult

CHECKPOINT_KEY = 'reshifts'


class ReshiftCounter:
    """Called with each window's result; ``window`` is the controller's
    window of the layers (``controller.window_of``)."""

    def __init__(self, window_of) -> None:
        self.window_of = window_of
        self.last_shift_step: dict[str, torch.Tensor] = {}
        self.reshifts = 0
        #: re-shifts exactly one window after the channel's previous shift
        self.reshifts_next_window = 0
        self.steps_to_reshift_sum = 0

    def __call__(self, result: WindowResult) -> None:
        for name, shifted in result.shifted_channels.items():
            shifted = shifted.cpu()
            last = self.last_shift_step.setdefault(
                name, torch.full((shifted.numel(), ), -1, dtype=torch.long))
            again = shifted & (last >= 0)
            self.reshifts += int(again.sum())
            self.reshifts_next_window += int(
                (again & (result.step - last == self.window_of(name))).sum())
            self.steps_to_reshift_sum += int((result.step - last[again]).sum())
            last[shifted] = result.step

    def state_dict(self) -> dict:
        return dict(recollapses=self.reshifts,
                    recollapses_next_window=self.reshifts_next_window,
                    steps_to_recollapse_sum=self.steps_to_reshift_sum)


def _register_hook():
    """``ReshiftCounterHook`` for mmengine's ``custom_hooks`` (research
    configs import this module through ``custom_imports``)."""
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS

    from psbn_mmdet.engine.hooks import find_controller

    @HOOKS.register_module(force=True)
    class ReshiftCounterHook(Hook):
        """Counts re-shifts of the run's :class:`PostShiftHook` (list it
        after that hook) and saves them under ``reshifts``."""

        priority = 'NORMAL'

        def __init__(self) -> None:
            self.counter = None

        def before_train(self, runner) -> None:
            controller = find_controller(runner, 'ReshiftCounterHook')
            self.counter = ReshiftCounter(controller.window_of)
            controller.callbacks.append(self.counter)

        def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
            if self.counter is not None:
                checkpoint[CHECKPOINT_KEY] = self.counter.state_dict()

    return ReshiftCounterHook


ReshiftCounterHook = _register_hook()
