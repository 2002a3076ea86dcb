"""Hooks for ``custom_hooks``: ``PostShiftHook`` (psBN) and ``CollapseMonitorHook`` (BN).

Importing this package registers both in mmengine's ``HOOKS``.
"""
from .collapse_monitor_hook import CollapseMonitorHook
from .post_shift_hook import (CHECKPOINT_KEY, LOG_KINDS, PostShiftHook,
                              find_controller, log_key, optimizer_stepped,
                              runner_model)

__all__ = ['CHECKPOINT_KEY', 'CollapseMonitorHook', 'LOG_KINDS',
           'PostShiftHook', 'find_controller', 'log_key', 'optimizer_stepped',
           'runner_model']
