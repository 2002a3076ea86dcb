"""psbn_mmdet.pruning.prune_dead, PrunedResNet and tools/prune_dead.py.

Backbone-level tests craft dead and constant channels into small ResNets
(BasicBlock and Bottleneck) whose other channels are kept alive, and check
that removing them changes nothing, counting FLOPs and parameters by hand.
Tool tests run a small Faster R-CNN on the generated demo data.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import psbn_mmdet  # noqa: F401
from conftest import REPO, one_line_error, resnet, tool
from psbn_mmdet.core import ChannelMax
from psbn_mmdet.pruning import (CHECK_TOLERANCE, block_widths,
                                find_removable, prune_dead, prune_state_dict,
                                relative_difference, removable_flops,
                                stage_costs)
from psbn_mmdet.pruning import calibrate as measure
from psbn_mmdet.pruning import internal_bns

pytest.importorskip('mmdet')
from psbn_mmdet.models.backbones import PrunedResNet  # noqa: E402

BASE = 8  # base_channels of the backbones built here
SHAPE = (3, 64, 64)
# {bn: channels} made dead: β far below anything γ·x̂ reaches
DEAD = {
    18: {'layer1.0.bn1': [1, 2], 'layer3.1.bn1': [0, 5, 6],
         'layer4.0.bn1': list(range(40))},
    50: {'layer1.0.bn1': [1, 2], 'layer2.1.bn2': [0, 3],
         'layer4.2.bn1': list(range(30)), 'layer4.2.bn2': [7]},
}
# {bn: {channel: β}} made constant (γ = 0): β > 0 before a 1x1 conv folds
# exactly; before a padded 3x3 conv it is kept; β <= 0 is simply dead
CONSTANT = {
    18: {'layer2.0.bn1': {0: 0.7}, 'layer2.1.bn1': {1: -0.3}},
    50: {'layer2.0.bn2': {3: 0.7, 4: 1.5}, 'layer2.1.bn1': {4: 0.7},
         'layer3.0.bn1': {5: -0.3}},
}
# removed per stage: dead (crafted, plus constants with β <= 0) and folded
REMOVED = {
    18: {'layer1': (2, 0), 'layer2': (1, 0), 'layer3': (3, 0),
         'layer4': (40, 0)},
    50: {'layer1': (2, 0), 'layer2': (2, 2), 'layer3': (1, 0),
         'layer4': (31, 0)},
}
KEPT_CONSTANT = {18: {'layer2': 1}, 50: {'layer2': 1}}


def _resnet(depth: int, cls=None, **kwargs):
    return resnet(depth, cls=cls, base_channels=BASE,
                  zero_init_residual=False, **kwargs)


def crafted_backbone(depth: int):
    """A ResNet whose BN statistics are measured on N(0, 1) inputs, every
    block-internal channel alive (β = 2), except DEAD and CONSTANT."""
    torch.manual_seed(0)
    net = _resnet(depth)
    net.init_weights()
    with torch.no_grad():
        for position in internal_bns(net):
            net.get_submodule(position.name).bias.fill_(2.0)
        for name, channels in DEAD[depth].items():
            net.get_submodule(name).bias[channels] = -1e4
        for name, betas in CONSTANT[depth].items():
            bn = net.get_submodule(name)
            for channel, beta in betas.items():
                bn.weight[channel], bn.bias[channel] = 0.0, beta
    measure_statistics(net, SHAPE)
    return net


def measure_statistics(backbone, shape) -> None:
    """BN running statistics: the average over N(0, 1) batches."""
    for module in backbone.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average
            module.train()  # also under norm_eval=True
    with torch.no_grad():
        for _ in range(3):
            backbone(torch.randn(4, *shape))
    backbone.eval()


def calibrate(net, inputs):
    """What the tool measures, on one batch of ``inputs``."""
    return measure(net, internal_bns(net), [(inputs, [None] * len(inputs))])


def pruned_copy(net, plans, depth):
    pruned = _resnet(depth, PrunedResNet,
                     block_widths=block_widths(net, plans))
    pruned.load_state_dict(prune_state_dict(net.state_dict(), plans, ''),
                           strict=True)
    pruned.eval()
    return pruned


@pytest.fixture(scope='module', params=[18, 50], ids=['r18', 'r50'])
def crafted(request):
    depth = request.param
    net = crafted_backbone(depth)
    inputs = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(1))
    plans = find_removable(net, calibrate(net, inputs))
    return depth, net, inputs, plans


# ------------------------------------------------------------ the channels
def test_dead_and_constant_channels_are_found_per_stage(crafted):
    depth, _, _, plans = crafted
    removed, kept = {}, {}
    for plan in plans:
        dead, folded = int(plan.dead.sum()), int(plan.folded.sum())
        if dead or folded:
            d, f = removed.get(plan.bn.stage, (0, 0))
            removed[plan.bn.stage] = (d + dead, f + folded)
        if plan.kept_constant.any():
            kept[plan.bn.stage] = int(plan.kept_constant.sum())
    assert removed == REMOVED[depth]
    assert kept == KEPT_CONSTANT[depth]
    by_name = {plan.bn.name: plan for plan in plans}
    for name, channels in DEAD[depth].items():
        assert by_name[name].dead.nonzero().flatten().tolist() == channels


def test_internal_positions_follow_the_block_type():
    r18, r50 = _resnet(18), _resnet(50)
    assert [p.name for p in internal_bns(r18)][:3] == [
        'layer1.0.bn1', 'layer1.1.bn1', 'layer2.0.bn1']
    assert len(internal_bns(r18)) == 8 and len(internal_bns(r50)) == 32
    first, second = internal_bns(r50)[:2]
    assert (first.conv, first.next_conv, first.next_bn,
            first.exact_fold) == ('layer1.0.conv1', 'layer1.0.conv2',
                                  'layer1.0.bn2', False)
    assert (second.next_conv, second.exact_fold) == ('layer1.0.conv3', True)


def test_pruned_backbone_computes_the_same_features(crafted):
    depth, net, inputs, plans = crafted
    pruned = pruned_copy(net, plans, depth)
    with torch.no_grad():
        expected, actual = net(inputs), pruned(inputs)
    differences = [relative_difference(a, b)
                   for a, b in zip(expected, actual)]
    assert max(differences) < CHECK_TOLERANCE, differences
    assert pruned.layer4[0 if depth == 18 else 2].conv1.out_channels == (
        BASE * 8 - 40 if depth == 18 else BASE * 8 - 30)


def test_a_block_keeps_one_channel_when_all_are_dead():
    net = crafted_backbone(18)
    with torch.no_grad():
        net.layer1[1].bn1.bias.fill_(-1e4)
    inputs = torch.randn(2, *SHAPE)
    plans = find_removable(net, calibrate(net, inputs))
    assert block_widths(net, plans)[0] == [BASE - 2, 1]
    pruned = pruned_copy(net, plans, 18)
    with torch.no_grad():
        assert relative_difference(net(inputs)[3],
                                   pruned(inputs)[3]) < CHECK_TOLERANCE


def test_constant_through_padded_conv_changes_only_the_border():
    """Folding a constant k through a zero-padded 3x3 conv: inside the
    image nothing changes; on the top row (not a corner) the next BN's
    output moves by γ·k·Σ W[:, c, 0, :] / σ, the taps that read padding."""
    net = crafted_backbone(18)
    block, k = net.layer1[0], 0.7
    with torch.no_grad():
        block.bn1.weight[3], block.bn1.bias[3] = 0.0, k
    inputs = torch.randn(2, *SHAPE)
    measured = calibrate(net, inputs)
    assert not find_removable(net, measured)[0].folded[3]  # kept by default
    plans = find_removable(net, measured, fold_padded=True)
    assert plans[0].folded.nonzero().flatten().tolist() == [3]
    pruned = pruned_copy(net, plans, 18)
    outputs = []
    for model in (net, pruned):
        store = []
        handle = model.layer1[0].bn2.register_forward_hook(
            lambda m, a, out: store.append(out.clone()))  # ReLU is in place
        with torch.no_grad():
            model(inputs)
        handle.remove()
        outputs.append(store[0])
    original, folded = outputs
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    assert relative_difference(original[inner],
                               folded[inner]) < CHECK_TOLERANCE
    bn2 = block.bn2
    scale = bn2.weight / (bn2.running_var + bn2.eps).sqrt()
    expected = scale * k * block.conv2.weight[:, 3, 0, :].sum(-1)
    top = (folded - original)[:, :, 0, 1:-1]  # (N, C, W - 2)
    torch.testing.assert_close(
        top, expected.detach()[None, :, None].expand_as(top),
        rtol=1e-4, atol=1e-5)
    assert expected.abs().max() > 0.01  # a difference that shows


def test_constant_through_1x1_conv_is_folded_exactly():
    net = crafted_backbone(50)
    inputs = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(2))
    plans = find_removable(net, calibrate(net, inputs))
    by_name = {plan.bn.name: plan for plan in plans}
    assert by_name['layer2.0.bn2'].folded.nonzero().flatten().tolist() == [
        3, 4]
    before = net.layer2[0].bn3.running_mean.clone()
    state = prune_state_dict(net.state_dict(), plans, '')
    shift = before - state['layer2.0.bn3.running_mean']
    conv3 = net.layer2[0].conv3.weight.detach()
    expected = 0.7 * conv3[:, 3].sum((1, 2)) + 1.5 * conv3[:, 4].sum((1, 2))
    torch.testing.assert_close(shift, expected)
    pruned = pruned_copy(net, plans, 50)
    with torch.no_grad():  # new inputs: a 1x1 fold holds everywhere
        x = torch.randn(1, *SHAPE)
        assert relative_difference(net(x)[1], pruned(x)[1]) < 1e-5


# ------------------------------------------------------------------- costs
def test_flops_and_params_removed_match_a_hand_count():
    """R18, base 8, 64x64 input: layer1's blocks see 16x16 maps and their
    3x3 convs have 8 inputs and 8 outputs: each channel of layer1.0.bn1
    costs conv1 8*9*256 and conv2 8*9*256 multiply-accumulates, and 8*9 +
    8*9 weights plus γ and β."""
    net = crafted_backbone(18)
    inputs = torch.randn(2, *SHAPE)
    plans = find_removable(net, calibrate(net, inputs))
    before = stage_costs(net, SHAPE)
    after = stage_costs(pruned_copy(net, plans, 18), SHAPE)
    assert before['layer1'].flops - after['layer1'].flops == 2 * 2 * 8 * 9 * 256
    assert before['layer1'].params - after['layer1'].params == 2 * (2 * 72 + 2)
    assert before['stem'].flops == after['stem'].flops == 8 * 3 * 49 * 32 * 32
    predicted = removable_flops(net, plans, SHAPE)
    for stage in ('stem', 'layer1', 'layer2', 'layer3', 'layer4'):
        assert predicted[stage] == before[stage].flops - after[stage].flops
    assert before['total'].flops == sum(before[s].flops for s in predicted)


# ------------------------------------------------------------ PrunedResNet
def test_pruned_resnet_is_built_from_a_config_and_checks_its_widths():
    from mmdet.registry import MODELS
    net = MODELS.build(dict(type='PrunedResNet', depth=50, base_channels=8,
                            block_widths=[[(8, 3)] * 3, [(16, 16)] * 4,
                                          [(1, 32)] * 6, [(64, 64)] * 3]))
    assert net.layer1[0].conv2.weight.shape == (3, 8, 3, 3)
    assert net.layer1[0].conv3.weight.shape == (32, 3, 1, 1)
    assert net.layer3[5].bn1.num_features == 1
    with pytest.raises(ValueError, match='stage 1 entry 9 must be a pair'):
        PrunedResNet(depth=50, block_widths=[[9] * 3, [(1, 1)] * 4,
                                             [(1, 1)] * 6, [(1, 1)] * 3])
    with pytest.raises(ValueError, match='between 1 and 16'):
        PrunedResNet(depth=18, base_channels=16,
                     block_widths=[[16, 17], [32, 32], [64, 64], [128, 128]])
    with pytest.raises(ValueError, match='4 lists'):
        PrunedResNet(depth=18, block_widths=[[64, 64]])


def test_channels_last_computes_the_same_features_in_nchw(crafted):
    depth, net, inputs, plans = crafted
    pruned = pruned_copy(net, plans, depth)
    nhwc = _resnet(depth, PrunedResNet, channels_last=True,
                   block_widths=block_widths(net, plans))
    nhwc.load_state_dict(pruned.state_dict(), strict=True)
    nhwc.eval()
    assert nhwc.layer4[0].conv2.weight.is_contiguous(
        memory_format=torch.channels_last)  # loading kept the format
    assert not pruned.layer4[0].conv2.weight.is_contiguous(
        memory_format=torch.channels_last)
    with torch.no_grad():
        for a, b in zip(pruned(inputs), nhwc(inputs)):
            assert b.is_contiguous()  # what the neck and RoIAlign expect
            assert relative_difference(a, b) < CHECK_TOLERANCE


def test_roi_align_misreads_channels_last_features():
    """Why PrunedResNet(channels_last=True) returns contiguous features."""
    from mmcv.ops import RoIAlign
    features = torch.randn(1, 8, 16, 16,
                           generator=torch.Generator().manual_seed(0))
    rois = torch.tensor([[0.0, 1.0, 1.0, 9.0, 12.0]])
    align = RoIAlign((7, 7), 1.0, sampling_ratio=0)
    nhwc = features.contiguous(memory_format=torch.channels_last)
    assert (align(nhwc, rois) - align(features, rois)).abs().max() > 0.1
    assert torch.equal(align(nhwc.contiguous(), rois), align(features, rois))


def test_without_plans_the_widths_rebuild_the_backbone_itself(crafted):
    depth, net, inputs, _ = crafted
    same = _resnet(depth, PrunedResNet, block_widths=block_widths(net))
    same.load_state_dict(net.state_dict(), strict=True)
    same.eval()
    with torch.no_grad():
        for a, b in zip(net(inputs), same(inputs)):
            assert torch.equal(a, b)


def test_frozen_stages_and_norm_eval_behave_as_in_resnet():
    net = PrunedResNet(depth=18, base_channels=8, frozen_stages=1,
                       norm_eval=True,
                       block_widths=[[2, 8], [16, 16], [32, 32], [64, 64]])
    net.train()
    assert not net.layer1[0].conv1.weight.requires_grad
    assert not net.layer1[0].bn1.training
    assert net.layer2[0].conv1.weight.requires_grad


# ------------------------------------------------------------ the tool
CONFIG = """
_base_ = '{repo}/configs/faster_rcnn_r50_bn.py'
data_root = '{root}/'
metainfo = dict(classes=('circle', 'square', 'triangle', 'ellipse', 'star'))
model = dict(
    backbone=dict(type='{backbone}', depth=18, base_channels=8, init_cfg=None,
                  frozen_stages=-1, norm_eval=True, zero_init_residual=False,
                  norm_cfg=dict(type='{norm}', requires_grad=True)),
    neck=dict(in_channels=[8, 16, 32, 64], out_channels=16),
    rpn_head=dict(in_channels=16, feat_channels=16,
                  anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=16),
        bbox_head=dict(in_channels=16, fc_out_channels=32, num_classes=5)),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=50)))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 96), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                          'img_shape', 'scale_factor'))]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='train/'),
                 pipeline=[dict(type='LoadImageFromFile'),
                           dict(type='LoadAnnotations', with_bbox=True),
                           dict(type='Resize', scale=(128, 96),
                                keep_ratio=True),
                           dict(type='PackDetInputs')]))
test_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='val/'), pipeline=test_pipeline))
val_dataloader = test_dataloader
test_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
val_evaluator = test_evaluator
"""
# crafted into the detector's backbone (R18, base 8)
TOOL_DEAD = {'layer2.1.bn1': [0, 1, 2], 'layer4.0.bn1': list(range(20))}


def write_config(folder: Path, workspace: Path, name='r18',
                 backbone='ResNet', norm='BN') -> Path:
    path = folder / f'{name}.py'
    path.write_text(CONFIG.format(repo=REPO, root=workspace / 'data' / 'demo',
                                  backbone=backbone, norm=norm))
    return path


def detector_checkpoint(config: Path, path: Path, dead=TOOL_DEAD,
                        beta: float = 2.0) -> Path:
    """The config's detector, backbone statistics measured on noise,
    internal channels alive (β) but for ``dead``."""
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(config)).model)
    model.init_weights()
    backbone = model.backbone
    with torch.no_grad():
        for position in internal_bns(backbone):
            backbone.get_submodule(position.name).bias.fill_(beta)
        for name, channels in dead.items():
            backbone.get_submodule(name).bias[channels] = -1e4
    measure_statistics(backbone, (3, 96, 128))
    torch.save({'meta': {'iter': 7}, 'state_dict': model.state_dict()}, path)
    return path


@pytest.fixture(scope='module')
def tool_files(workspace, tmp_path_factory):
    folder = tmp_path_factory.mktemp('prune_tool')
    config = write_config(folder, workspace)
    return config, detector_checkpoint(config, folder / 'r18.pth'), folder


def cli(*args) -> int:
    from psbn_mmdet.cli.prune import prune_main
    return tool('prune_dead', prune_main, *args)


def report_cli(*args) -> int:
    from psbn_mmdet.cli.report import report_main
    return tool('collapse_report', report_main, *args)


def test_tool_writes_a_config_and_checkpoint_mmdet_loads_strictly(
        tool_files, tmp_path, capsys):
    config, checkpoint, _ = tool_files
    out_dir = tmp_path / 'out'
    assert cli(config, checkpoint, out_dir, '--num-images', 4) == 0
    printed = capsys.readouterr().out
    lines = {line.split()[0]: line for line in printed.splitlines()
             if line.split() and line.split()[0] in ('layer2', 'layer4')}
    assert lines['layer2'].split()[1:3] == ['32', '3']  # channels, dead
    assert lines['layer4'].split()[1:3] == ['128', '20']
    assert 'calibration images: backbone features differ by' in printed
    assert ': ok' in printed and 'bbox mAP' in printed
    pruned_config = out_dir / 'r18_pruned.py'
    pruned_checkpoint = out_dir / 'r18_pruned.pth'
    assert sorted(p.name for p in out_dir.iterdir()) == [
        'r18_pruned.pth', 'r18_pruned.py']

    # what mmdet's tools do with a config: custom_imports, the registry,
    # load_checkpoint(strict=True)
    from mmengine.config import Config
    from mmengine.runner import load_checkpoint
    from mmdet.registry import MODELS
    cfg = Config.fromfile(str(pruned_config))
    assert cfg.model.backbone.type == 'PrunedResNet'
    assert cfg.model.backbone.block_widths == [[8, 8], [16, 13], [32, 32],
                                               [44, 64]]
    assert 'psbn_mmdet.models.backbones' in cfg.custom_imports.imports
    assert cfg.load_from == str(pruned_checkpoint.resolve())
    pruned = MODELS.build(cfg.model).eval()
    load_checkpoint(pruned, str(pruned_checkpoint), strict=True,
                    logger='silent')
    original = MODELS.build(Config.fromfile(str(config)).model).eval()
    original.load_state_dict(torch.load(checkpoint)['state_dict'])
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        for a, b in zip(original.extract_feat(x), pruned.extract_feat(x)):
            assert relative_difference(a, b) < CHECK_TOLERANCE
    saved = torch.load(pruned_checkpoint, weights_only=True)
    assert set(saved) == {'meta', 'state_dict'} and saved['meta']['iter'] == 7


def test_channels_last_is_written_and_self_checked_on_detections(
        tool_files, tmp_path, capsys, monkeypatch):
    from mmengine.config import Config
    config, checkpoint, _ = tool_files
    out_dir = tmp_path / 'out'
    assert cli(config, checkpoint, out_dir, '--num-images', 4,
               '--channels-last') == 0
    assert ': ok' in capsys.readouterr().out
    cfg = Config.fromfile(str(out_dir / 'r18_pruned.py'))
    assert cfg.model.backbone.channels_last is True
    # the self-check compares detections: NHWC features reaching RoIAlign
    # (not made contiguous) would fail it and write nothing
    from mmdet.models.backbones import ResNet

    def leaky(self, x):
        return ResNet.forward(self,
                              x.contiguous(memory_format=torch.channels_last))
    monkeypatch.setattr(PrunedResNet, 'forward', leaky)
    result = prune_dead(str(config), str(checkpoint), str(tmp_path / 'leaky'),
                        num_images=4, channels_last=True, eval_images=0)
    assert result.check.features < CHECK_TOLERANCE
    assert not result.check.passed and not result.written


@pytest.mark.slow
def test_mmdet_tools_test_and_train_use_the_pruned_files(tool_files,
                                                         workspace, tmp_path):
    from conftest import run_tool
    config, checkpoint, _ = tool_files
    result = prune_dead(str(config), str(checkpoint), str(tmp_path / 'out'),
                        num_images=2, eval_images=0)
    assert result.written
    tested = run_tool(REPO / 'tools' / 'test.py', result.config,
                      result.checkpoint, '--work-dir', tmp_path / 'test',
                      cwd=workspace)
    assert tested.returncode == 0, tested.stderr[-2000:]
    assert 'coco/bbox_mAP' in tested.stdout + tested.stderr
    trained = run_tool(
        REPO / 'tools' / 'train.py', result.config, '--work-dir',
        tmp_path / 'train', '--cfg-options', 'train_cfg.max_epochs=1',
        'train_cfg.val_interval=10', cwd=workspace)  # 8 images: 4 iterations
    assert trained.returncode == 0, trained.stderr[-2000:]
    log = trained.stdout + trained.stderr
    assert f'Load checkpoint from {result.checkpoint}' in log
    assert 'Epoch(train) [1][4/4]' in log
    weights = torch.load(tmp_path / 'train' / 'epoch_1.pth',
                         weights_only=False)['state_dict']
    assert weights['backbone.layer4.0.conv1.weight'].shape[0] == 64 - 20


@pytest.mark.slow
def test_export_of_a_pruned_model_loads_in_mmdet_test_tool(tool_files,
                                                          workspace, tmp_path):
    """export_bn keeps the import that registers PrunedResNet (and says
    so), so tools/test.py runs the exported config (issue 21)."""
    from conftest import run_tool
    config, checkpoint, _ = tool_files
    result = prune_dead(str(config), str(checkpoint), str(tmp_path / 'out'),
                        num_images=2, eval_images=0)
    exported = run_tool(REPO / 'tools' / 'export_bn.py', result.config,
                        result.checkpoint, tmp_path / 'bn', cwd=workspace)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert ('uses PrunedResNet: its config imports '
            'psbn_mmdet.models.backbones.pruned_resnet') in exported.stderr
    bn_config = tmp_path / 'bn' / 'r18_pruned_bn.py'
    tested = run_tool(REPO / 'tools' / 'test.py', bn_config,
                      tmp_path / 'bn' / 'r18_pruned_bn.pth', '--work-dir',
                      tmp_path / 'test', cwd=workspace)
    assert tested.returncode == 0, tested.stderr[-2000:]
    assert 'coco/bbox_mAP' in tested.stdout + tested.stderr


def test_channels_dead_on_calibration_images_may_wake_on_others(
        tool_files, tmp_path):
    """A channel pushed just below 0 on the first two test images and
    above it on another: removed, and reported awake on the test set."""
    from psbn_mmdet.analysis import ActivationProbe, extents
    config, _, folder = tool_files
    checkpoint = detector_checkpoint(config, tmp_path / 'wake.pth', dead={})
    state = torch.load(checkpoint)['state_dict']
    from mmengine.config import Config
    from mmdet.registry import MODELS
    model = MODELS.build(Config.fromfile(str(config)).model).eval()
    model.load_state_dict(state)
    bn = model.backbone.layer3[0].bn1
    probe = ActivationProbe(config, config, 4, batch_size=1)
    per_image = []
    for inputs, samples in probe.batches():
        with ChannelMax({'bn': bn}) as maxima, torch.no_grad():
            maxima.extents = extents(inputs, samples)
            model.backbone(inputs)
        per_image.append(maxima.maxima['bn'])
    per_image = torch.stack(per_image)  # (4 images, channels)
    gap = per_image[2:].max(0).values - per_image[:2].max(0).values
    channel = int(gap.argmax())
    assert gap[channel] > 0.1
    shift = (per_image[:2, channel].max() + per_image[2:, channel].max()) / 2
    state['backbone.layer3.0.bn1.bias'][channel] -= shift
    torch.save({'state_dict': state}, checkpoint)
    result = prune_dead(config, str(checkpoint), str(tmp_path / 'out'),
                        data_config=str(config), num_images=2, write=False)
    assert result.check.passed
    removed = {p.bn.name: p.dead.nonzero().flatten().tolist()
               for p in result.plans if p.dead.any()}
    assert removed == {'layer3.0.bn1': [channel]}
    awake_on = int((per_image[:, channel] - shift > 0).sum())
    assert result.evaluation.woken == {'layer3': 1}
    assert result.evaluation.images_waking == awake_on >= 1
    assert result.evaluation.images == 4


def test_psbn_config_is_pruned_too(tool_files, workspace, tmp_path):
    config, checkpoint, _ = tool_files
    psbn_config = write_config(tmp_path, workspace, 'r18_psbn', norm='psBN')
    result = prune_dead(str(psbn_config), str(checkpoint),
                        str(tmp_path / 'out'), num_images=2,
                        eval_images=0, write=False)
    assert result.check.passed
    assert sum(int(p.dead.sum()) for p in result.plans) == 23


# ---------------------------------------------------------------- bad input
def _one_line_exit_2(capsys, code, message, out_dir):
    one_line_error(code, capsys.readouterr().err, 'prune_dead: error: ',
                   message)
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_unsupported_backbone_names_the_supported_ones(tool_files, workspace,
                                                       tmp_path, capsys):
    _, checkpoint, _ = tool_files
    config = write_config(tmp_path, workspace, 'x', backbone='ResNeXt')
    out_dir = tmp_path / 'out'
    _one_line_exit_2(capsys, cli(config, checkpoint, out_dir),
                     "unsupported backbone ResNeXt: prune_dead supports "
                     "mmdet's ResNet, ResNetV1d, PrunedResNet", out_dir)


def test_checkpoint_of_another_model_is_refused(tool_files, tmp_path,
                                                capsys):
    config, _, _ = tool_files
    other = tmp_path / 'r50.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in
                               _resnet(50).state_dict().items()}}, other)
    out_dir = tmp_path / 'out'
    _one_line_exit_2(capsys, cli(config, other, out_dir),
                     'does not match the model of', out_dir)


def test_no_removable_channel_writes_nothing(tool_files, tmp_path, capsys):
    config, _, _ = tool_files
    alive = detector_checkpoint(config, tmp_path / 'alive.pth', dead={},
                                beta=50.0)
    out_dir = tmp_path / 'out'
    _one_line_exit_2(capsys, cli(config, alive, out_dir, '--num-images', 2),
                     'no removable channel in', out_dir)


def test_unwritable_out_dir_fails_before_any_work(tool_files, tmp_path,
                                                  capsys, monkeypatch):
    import os
    config, checkpoint, _ = tool_files
    out_dir = tmp_path / 'read_only'
    out_dir.mkdir()
    out_dir.chmod(0o555)
    real_access = os.access
    monkeypatch.setattr(os, 'access', lambda path, mode: False if Path(
        path) == out_dir else real_access(path, mode))  # root ignores 0o555
    _one_line_exit_2(capsys, cli(config, checkpoint, out_dir),
                     'cannot write there', out_dir)
    file_out = tmp_path / 'file'
    file_out.write_text('')
    assert cli(config, checkpoint, file_out) == 2
    assert 'not a directory' in capsys.readouterr().err


def test_full_disk_leaves_no_file(tool_files, tmp_path, capsys, full_disk):
    config, checkpoint, _ = tool_files
    out_dir = tmp_path / 'out'
    assert cli(config, checkpoint, out_dir, '--num-images', 2) == 2
    assert 'No space left on device' in capsys.readouterr().err
    assert not out_dir.exists() or not any(out_dir.iterdir())


# ------------------------------------------------------ the report's column
def test_report_counts_what_the_tool_removes(tool_files, tmp_path, capsys):
    config, checkpoint, _ = tool_files
    out = tmp_path / 'report.json'
    assert report_cli(checkpoint, '--data-config', config, '--num-images', 2,
                      '--json', out) == 0
    report = json.loads(out.read_text())
    stages = {row['name']: row for row in report['stages']}
    assert {name: row['removable'] for name, row in stages.items()} == {
        'stem': 0, 'layer1': 0, 'layer2': 3, 'layer3': 0, 'layer4': 20}
    assert report['total']['removable'] == 23
    result = prune_dead(str(config), str(checkpoint), str(tmp_path / 'out'),
                        data_config=str(config), num_images=2,
                        eval_images=0, write=False)
    for stage in ('layer2', 'layer4', 'total'):
        before, after = result.before[stage].flops, result.after[stage].flops
        row = stages.get(stage, report['total'])
        assert row['removable_flops_pct'] == pytest.approx(
            100 * (before - after) / before)
    assert stages['layer4']['removable_flops_pct'] > 10
    header = capsys.readouterr().out.splitlines()[1]
    assert header.split()[-2:] == ['removable', '(FLOPs)']
