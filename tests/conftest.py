"""Shared fixtures: generated demo data and demo configs pointed at it."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / 'configs'
PYTHON = sys.executable


@pytest.fixture(scope='session')
def workspace(tmp_path_factory) -> Path:
    """A directory holding ``data/demo`` (small), as the configs expect."""
    from psbn_mmdet.demo.data import make_demo_data
    root = tmp_path_factory.mktemp('workspace')
    make_demo_data(root / 'data' / 'demo', num_train=8, num_val=4)
    return root


@pytest.fixture
def in_workspace(workspace, monkeypatch) -> Path:
    monkeypatch.chdir(workspace)
    return workspace


def demo_config(name: str, work_dir, max_iters: int = 2, **options):
    """A demo config, shortened to ``max_iters`` and without random flips."""
    import psbn_mmdet  # noqa: F401
    from mmengine.config import Config
    cfg = Config.fromfile(str(CONFIGS / 'demo' / name))
    cfg.work_dir = str(work_dir)
    cfg.train_cfg.max_iters = max_iters
    cfg.train_cfg.val_interval = max_iters
    cfg.default_hooks.checkpoint.interval = max_iters
    cfg.default_hooks.logger.interval = 1
    cfg.randomness = dict(seed=0)
    cfg.merge_from_dict(options)
    return cfg


def run_tool(*args, cwd=None, env=None, timeout=600):
    """Run ``python ARGS`` as a user does: the installed package, no
    PYTHONPATH pointing at the checkout."""
    import subprocess
    full_env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    full_env.update(env or {})
    return subprocess.run([PYTHON, *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def full_disk(monkeypatch):
    """Every file flushed after the first fails as on a full disk."""
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) > 1:
            raise OSError(28, 'No space left on device')
        return real_fsync(fd)

    monkeypatch.setattr(os, 'fsync', fsync)


def tool(prog: str, main, *args) -> int:
    """A tool run in this process (``main`` of :mod:`psbn_mmdet.cli`'s
    modules): its exit status; output captured by pytest."""
    from mmengine.logging import MMLogger

    from psbn_mmdet.cli import run_tool as run
    before = set(MMLogger._instance_dict)
    try:
        return run(prog, main, [str(a) for a in args])
    finally:
        # A Runner's logger is named by the second it started and writes to
        # this test's captured stderr; a second run in the same second would
        # reuse it after pytest closed that stream ("--- Logging error ---").
        for name in set(MMLogger._instance_dict) - before:
            for handler in MMLogger._instance_dict.pop(name).handlers:
                handler.close()


def one_line_error(code: int, err: str, *fragments) -> str:
    """Assert the tools' error convention: exit 2, one line on stderr, no
    traceback, each fragment in it.  Returns the line."""
    assert code == 2, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in err, err[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def resnet(depth: int, norm_type: str = 'BN', cls=None, **kwargs):
    """mmdet's ResNet (or ``cls``, a subclass) with ``norm_cfg`` of
    ``norm_type``."""
    from mmdet.models.backbones import ResNet
    return (cls or ResNet)(depth=depth, norm_cfg=dict(type=norm_type,
                                                      requires_grad=True),
                           **kwargs)
