"""Hooks for ``custom_hooks``: ``PostShiftHook`` and ``CollapseMonitorHook``."""
