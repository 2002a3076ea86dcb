"""Every config in configs/ builds; psBN/BN pairs differ only where intended."""
import pytest
from mmengine.config import Config

import psbn_mmdet  # noqa: F401
from conftest import CONFIGS
from psbn_mmdet import psBN

# every config a user runs (``_base_/`` holds parts that are not configs)
ALL = sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob('*.py')
             if '_base_' not in p.parts)


def _bns(model):
    from torch.nn.modules.batchnorm import _BatchNorm
    return [m for m in model.backbone.modules() if isinstance(m, _BatchNorm)]


@pytest.mark.parametrize('name', ALL)
def test_config_builds(name):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(str(CONFIGS / name))
    assert 'psbn_mmdet' in cfg.custom_imports['imports']
    model = MODELS.build(cfg.model)
    is_psbn = '_psbn' in name
    assert all(isinstance(m, psBN) == is_psbn for m in _bns(model))
    hook_types = [h['type'] for h in cfg.custom_hooks]
    assert hook_types == (['PostShiftHook'] if is_psbn else
                          ['CollapseMonitorHook'])


@pytest.mark.parametrize('name', [n for n in ALL if not n.startswith('demo/')])
def test_user_configs_keep_torchvision_init_and_mmdet_finetuning(name):
    cfg = Config.fromfile(str(CONFIGS / name))
    backbone = cfg.model.backbone
    depth = backbone.depth
    assert backbone.init_cfg.checkpoint == f'torchvision://resnet{depth}'
    assert backbone.norm_eval is True and backbone.frozen_stages == 1
    if 'finetune' in name:
        assert cfg.load_from.startswith('https://download.openmmlab.com/')


@pytest.mark.parametrize('psbn, bn', [
    ('faster_rcnn_r50_psbn.py', 'faster_rcnn_r50_bn.py'),
    ('demo/faster_rcnn_r18_demo_psbn_finetune.py',
     'demo/faster_rcnn_r18_demo_bn_finetune.py'),
    ('demo/faster_rcnn_r18_demo_psbn_inherited.py',
     'demo/faster_rcnn_r18_demo_bn_inherited.py'),
    ('demo/mask_rcnn_r18_demo_psbn.py', 'demo/mask_rcnn_r18_demo_bn.py'),
    ('demo/mask_rcnn_r18_demo_psbn_finetune.py',
     'demo/mask_rcnn_r18_demo_bn_finetune.py'),
])
def test_psbn_and_bn_configs_differ_only_in_norm_and_hook(psbn, bn):
    a = Config.fromfile(str(CONFIGS / psbn))
    b = Config.fromfile(str(CONFIGS / bn))
    a.model.backbone.norm_cfg.type = 'BN'
    a.custom_hooks = b.custom_hooks
    assert a.to_dict() == b.to_dict()


@pytest.mark.parametrize('name', ['faster_rcnn_r18_demo_psbn_finetune.py',
                                  'faster_rcnn_r18_demo_psbn_inherited.py',
                                  'mask_rcnn_r18_demo_psbn.py',
                                  'mask_rcnn_r18_demo_psbn_finetune.py'])
def test_demo_pairs_hooks_differ_only_in_type(name):
    """Same logging interval and detection window: the same windows are
    judged, one hook shifts and the other only counts."""
    [psbn] = Config.fromfile(str(CONFIGS / 'demo' / name)).custom_hooks
    [bn] = Config.fromfile(str(CONFIGS / 'demo' / name.replace(
        '_psbn', '_bn'))).custom_hooks
    assert psbn.pop('type') == 'PostShiftHook'
    assert bn.pop('type') == 'CollapseMonitorHook'
    assert psbn == bn and psbn.window >= 1


def test_mask_finetune_is_the_faster_finetune_on_mask_rcnn():
    """The Mask R-CNN finetune uses the Faster R-CNN finetune's regime
    (optimizer, schedule, frozen stages) from its own pretrain."""
    faster = Config.fromfile(
        str(CONFIGS / 'demo/faster_rcnn_r18_demo_bn_finetune.py'))
    mask = Config.fromfile(
        str(CONFIGS / 'demo/mask_rcnn_r18_demo_bn_finetune.py'))
    for key in ('optim_wrapper', 'train_cfg', 'param_scheduler'):
        assert mask[key] == faster[key], key
    for key in ('frozen_stages', 'norm_eval'):
        assert mask.model.backbone[key] == faster.model.backbone[key]
    assert mask.model.type == 'MaskRCNN'
    assert mask.load_from == ('work_dirs/mask_rcnn_r18_demo_bn/iter_'
                              f'{Config.fromfile(str(CONFIGS / "demo/mask_rcnn_r18_demo_bn.py")).train_cfg.max_iters}.pth')


def test_demo_finetunes_start_from_the_pretrained_checkpoint():
    """``load_from`` is where tools/train.py leaves the pretrain's last
    checkpoint; the finetunes use mmdet's finetuning setup and the seed."""
    pretrain = Config.fromfile(
        str(CONFIGS / 'demo/faster_rcnn_r18_demo_bn_pretrain.py'))
    checkpoint = ('work_dirs/faster_rcnn_r18_demo_bn_pretrain/'
                  f'iter_{pretrain.train_cfg.max_iters}.pth')
    assert pretrain.default_hooks.checkpoint.interval == \
        pretrain.train_cfg.max_iters
    for norm in ('bn', 'psbn'):
        cfg = Config.fromfile(
            str(CONFIGS / f'demo/faster_rcnn_r18_demo_{norm}_finetune.py'))
        assert cfg.load_from == checkpoint
        assert cfg.randomness == pretrain.randomness
        assert cfg.randomness.seed is not None
        backbone = cfg.model.backbone
        assert backbone.frozen_stages == 1 and backbone.norm_eval is True


@pytest.mark.parametrize('name', [n for n in ALL
                                  if n.endswith('_finetune.py')
                                  and not n.startswith('demo/')])
def test_finetune_configs_share_one_schedule(name):
    schedule = Config.fromfile(
        str(CONFIGS / '_base_' / 'schedules' / 'finetune_4e.py'))
    cfg = Config.fromfile(str(CONFIGS / name))
    assert cfg.train_cfg.max_epochs == 4
    assert cfg.param_scheduler == schedule.finetune_param_scheduler
    assert cfg.load_from.startswith('https://download.openmmlab.com/')
