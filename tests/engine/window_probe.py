"""A hook for tests/engine/test_resume.py, imported by training runs of
tools/train.py (custom_imports): it writes every window-end decision of the
run's PostShiftHook to ``<work_dir>/windows.jsonl``."""
from __future__ import annotations

import json
import os

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from psbn_mmdet.engine.hooks import find_controller


@HOOKS.register_module()
class WindowProbeHook(Hook):
    """List it after PostShiftHook in custom_hooks."""

    def before_train(self, runner) -> None:
        path = os.path.join(runner.work_dir, 'windows.jsonl')
        controller = find_controller(runner)

        def record(result):
            with open(path, 'a') as f:
                f.write(json.dumps(dict(
                    step=result.step, batches=result.batches,
                    dead=result.dead, shifted={
                        name: mask.nonzero().flatten().tolist()
                        for name, mask in result.shifted_channels.items()})
                ) + '\n')

        controller.callbacks.append(record)
