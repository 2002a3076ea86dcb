"""Real training through mmengine's Runner on generated demo data."""
import math

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import Runner

from conftest import demo_config

pytestmark = pytest.mark.slow


def test_faster_rcnn_demo_trains_and_evaluates_with_coco_metric(
        in_workspace, tmp_path):
    cfg = demo_config('faster_rcnn_r50_demo_psbn.py', tmp_path / 'run')
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2
    metrics = runner.val()
    assert math.isfinite(metrics['coco/bbox_mAP'])
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0
    hub = runner.message_hub
    assert hub.get_scalar('train/psbn/dead_layer3') is not None


def test_mask_rcnn_demo_reports_segm_map(in_workspace, tmp_path):
    cfg = demo_config('mask_rcnn_r50_demo_psbn.py', tmp_path / 'run',
                      max_iters=1)
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.val()
    assert math.isfinite(metrics['coco/segm_mAP'])
    assert math.isfinite(metrics['coco/bbox_mAP'])


@HOOKS.register_module(force=True)
class RecordResumeHook(Hook):
    """Captures what the runner holds when training (re)starts."""
    seen = {}

    def before_train(self, runner):
        model = runner.model
        RecordResumeHook.seen = dict(
            iter=runner.iter,
            params={k: v.detach().clone()
                    for k, v in model.state_dict().items()},
            momentum={
                i: s['momentum_buffer'].clone()
                for i, s in enumerate(
                    runner.optim_wrapper.optimizer.state.values())
            },
            controller_steps=next(
                h for h in runner.hooks
                if type(h).__name__ == 'PostShiftHook').controller.steps)


def test_resume_continues_iteration_parameters_and_optimizer(
        in_workspace, tmp_path):
    work_dir = tmp_path / 'run'
    cfg = demo_config('faster_rcnn_r50_demo_psbn.py', work_dir)
    Runner.from_cfg(cfg).train()
    checkpoint_path = work_dir / 'iter_2.pth'
    # torch >= 2.6 loads with weights_only=True: psbn_mmdet's allow-list
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    assert checkpoint['psbn']['steps'] == 2

    cfg = demo_config('faster_rcnn_r50_demo_psbn.py', work_dir, max_iters=4)
    cfg.resume, cfg.load_from = True, str(checkpoint_path)
    cfg.custom_hooks = cfg.custom_hooks + [dict(type='RecordResumeHook')]
    runner = Runner.from_cfg(cfg)
    runner.train()
    seen = RecordResumeHook.seen
    assert seen['iter'] == 2 and runner.iter == 4
    assert seen['controller_steps'] == 2
    for key, value in checkpoint['state_dict'].items():
        assert torch.equal(seen['params'][key], value), key
    saved = checkpoint['optimizer']['state']
    assert len(seen['momentum']) == len(saved)
    for index, state in saved.items():
        assert torch.equal(seen['momentum'][index], state['momentum_buffer'])
    final = runner.model.state_dict()
    assert not torch.equal(final['backbone.layer4.0.conv1.weight'],
                           checkpoint['state_dict']
                           ['backbone.layer4.0.conv1.weight'])
