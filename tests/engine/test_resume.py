"""Resuming part-way through a detection window (issue 21), through
tools/train.py --resume: the resumed run decides what the uninterrupted
run decides, on the same window."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from conftest import CONFIGS, REPO, run_tool

pytestmark = pytest.mark.slow

#: the demo's psBN finetune from random init, window 10, checkpoints every
#: 5 iterations, every decision recorded (window_probe.py)
CONFIG = f"""
_base_ = '{CONFIGS / 'demo' / 'faster_rcnn_r18_demo_psbn_finetune.py'}'
load_from = None
custom_imports = dict(imports=['psbn_mmdet', 'window_probe'],
                      allow_failed_imports=False)
custom_hooks = [dict(type='PostShiftHook', interval=1, window=10),
                dict(type='WindowProbeHook')]
default_hooks = dict(checkpoint=dict(interval=5), logger=dict(interval=1))
randomness = dict(seed=0)
"""


def _train(workspace, work_dir, iterations, *extra):
    config = work_dir.parent / 'resume.py'
    config.write_text(CONFIG)
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=str(REPO / 'tests' / 'engine'))
    return run_tool(
        REPO / 'tools' / 'train.py', config, '--work-dir', work_dir, *extra,
        '--cfg-options', f'train_cfg.max_iters={iterations}',
        'train_cfg.val_interval=1000', cwd=workspace, env=env)


def _windows(work_dir) -> list[dict]:
    return [json.loads(line) for line in
            (work_dir / 'windows.jsonl').read_text().splitlines()]


@pytest.fixture(scope='module')
def cut_at_5(workspace, tmp_path_factory):
    """The run both tests resume: 5 of 10 iterations, checkpoint at 5 (no
    window ended yet).  Each test resumes its own copy."""
    cut = tmp_path_factory.mktemp('resume') / 'cut'
    first = _train(workspace, cut, 5)
    assert first.returncode == 0, first.stderr[-3000:]
    assert not (cut / 'windows.jsonl').exists()  # no window ended yet
    return cut


def _copy(cut, tmp_path):
    """A copy of ``cut`` whose last_checkpoint names its own iter_5.pth."""
    copy = shutil.copytree(cut, tmp_path / 'cut')
    (copy / 'last_checkpoint').write_text(str(copy / 'iter_5.pth'))
    return copy


def test_resume_inside_a_window_decides_as_the_uninterrupted_run(
        workspace, cut_at_5, tmp_path):
    whole = tmp_path / 'whole'
    done = _train(workspace, whole, 10)
    assert done.returncode == 0, done.stderr[-3000:]
    cut = _copy(cut_at_5, tmp_path)
    resumed = _train(workspace, cut, 10, '--resume', cut / 'iter_5.pth')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'inside the detection window' not in resumed.stdout + \
        resumed.stderr
    [expected], [actual] = _windows(whole), _windows(cut)
    assert expected['step'] == actual['step'] == 10
    # the window's ten batches, restored from the checkpoint
    assert set(actual['batches'].values()) == {10}
    assert actual == expected


def test_a_checkpoint_without_window_statistics_skips_that_window(
        workspace, cut_at_5, tmp_path):
    """An earlier version's checkpoint (no statistics): the cut window's
    decision is skipped, and the log says so."""
    import torch
    cut = _copy(cut_at_5, tmp_path)
    checkpoint = torch.load(cut / 'iter_5.pth', weights_only=False)
    del checkpoint['psbn']['windows']
    torch.save(checkpoint, cut / 'iter_5.pth')
    resumed = _train(workspace, cut, 10, '--resume', cut / 'iter_5.pth')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert ('resumed at step 5, inside the detection window' in
            resumed.stdout + resumed.stderr)
    [window] = _windows(cut)
    assert (window['step'], window['batches'], window['shifted']) == (
        10, {}, {})  # decided on no layer
