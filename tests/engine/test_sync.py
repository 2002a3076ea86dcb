"""psSyncBN through mmengine's SyncBN conversions, and hooks that never run
without their layers (issue 22), through the real tools."""
from __future__ import annotations

import os

import pytest
import torch

from conftest import CONFIGS, REPO, one_line_error, run_tool, tool

FINETUNE = CONFIGS / 'demo' / 'faster_rcnn_r18_demo_psbn_finetune.py'
#: four iterations from random init, decisions every 2 (15 channels of the
#: demo detector are dead at the first window end)
SHORT = ['load_from=None', 'train_cfg.max_iters=4', 'train_cfg.val_interval=100',
         'default_hooks.checkpoint.interval=4', 'custom_hooks.0.window=2',
         'custom_hooks.0.interval=1', 'randomness.seed=0']


def _shift_counts(work_dir) -> dict:
    state = torch.load(work_dir / 'iter_4.pth', weights_only=False)
    return state['psbn']['shift_counts']


@pytest.mark.slow
def test_pssyncbn_in_one_process_recovers_exactly_as_psbn(workspace,
                                                          tmp_path):
    """mmengine reverts every SyncBN of a one-process run to plain BN;
    PostShiftHook makes them post-shift again."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    counts = {}
    for norm in ('psBN', 'psSyncBN'):
        done = run_tool(REPO / 'tools' / 'train.py', FINETUNE, '--work-dir',
                        tmp_path / norm, '--cfg-options', *SHORT,
                        f'model.backbone.norm_cfg.type={norm}',
                        cwd=workspace, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        counts[norm] = _shift_counts(tmp_path / norm)
        if norm == 'psSyncBN':
            assert 'post-shift again, as psBN / psSyncBN' in (done.stdout
                                                              + done.stderr)
    assert counts['psSyncBN'] == counts['psBN']
    assert sum(sum(c) for c in counts['psBN'].values()) > 0


@pytest.mark.parametrize('implementation', ['torch', 'mmcv'])
def test_sync_bn_conversions_make_pssyncbn_of_psbn(implementation):
    """sync_bn='torch' / 'mmcv': in a distributed run the Runner calls
    mmengine's convert_sync_batchnorm, which makes plain SyncBatchNorm of
    every BN; PostShiftHook makes psSyncBN of the psBN ones again, with
    their options, Parameters and window statistics.  Tested on the
    Runner's own function in one gloo process: torch's DDP refuses
    SyncBatchNorm on CPU modules ("SyncBatchNorm layers only work with GPU
    modules"), so tools/dist_train.sh cannot run sync_bn on CPUs; psSyncBN's
    all-reduce in training is research/gpu_check.py's, identical decisions
    on every rank tests/core/test_controller_dist.py's."""
    import torch.distributed as dist
    from mmdet.models.backbones import ResNet
    from mmengine.model import convert_sync_batchnorm

    from psbn_mmdet import psSyncBN
    from psbn_mmdet.models.layers import restore_post_shift
    started = not dist.is_initialized()
    if started:
        dist.init_process_group('gloo', init_method='tcp://127.0.0.1:29531',
                                rank=0, world_size=1)
    try:
        net = ResNet(depth=18, norm_cfg=dict(type='psBN', window=5,
                                             active_fraction=0.25))
        weight = net.layer1[0].bn1.weight
        stats = net.layer1[0].bn1.window_stats
        converted = convert_sync_batchnorm(net, implementation)
        assert not isinstance(converted.layer1[0].bn1, psSyncBN)
        restored, count = restore_post_shift(converted)
    finally:
        if started:
            dist.destroy_process_group()
    bn = restored.layer1[0].bn1
    assert count == 20 and isinstance(bn, psSyncBN)
    assert bn.weight is weight and bn.window_stats is stats
    assert (bn.window, bn.active_fraction) == (5, 0.25)


def test_post_shift_hook_without_psbn_layers_stops_with_one_line(
        in_workspace, tmp_path, capsys):
    """A BN config with PostShiftHook: nothing would ever be recovered."""
    from psbn_mmdet.cli.runner import train_main
    bn_config = CONFIGS / 'demo' / 'faster_rcnn_r18_demo_bn_finetune.py'
    code = tool('train', train_main, bn_config, '--work-dir', tmp_path / 'w',
                '--cfg-options', 'load_from=None', 'train_cfg.max_iters=2',
                'custom_hooks.0.type=PostShiftHook')
    one_line_error(code, capsys.readouterr().err,
                   'PostShiftHook found no psBN layer to post-shift',
                   "norm_cfg=dict(type='psBN')", 'CollapseMonitorHook')
