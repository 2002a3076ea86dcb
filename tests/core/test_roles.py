"""Roles (pre-ReLU / pre-add) and stages from model structure and from names."""
import warnings

import pytest
import torch
from torch import nn

from psbn_mmdet.core import (PRE_ADD, PRE_RELU, roles_from_model,
                             roles_from_names, unplaced)

# pre-ReLU BNs in a ResNet: stem + (1 per BasicBlock | 2 per Bottleneck)
BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3),
          101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def _expected_counts(depth, stem_bns=1):
    per_block = 1 if depth < 50 else 2
    blocks = sum(BLOCKS[depth])
    pre_relu = stem_bns + per_block * blocks
    pre_add = blocks + 4  # last BN of every block + one downsample per stage
    if depth < 50:
        pre_add -= 1  # BasicBlock layer1 keeps 64 channels: no downsample
    return pre_relu, pre_add


@pytest.mark.parametrize('depth', [18, 34, 50, 101, 152])
def test_mmdet_resnet_roles(depth):
    from mmdet.models.backbones import ResNet
    model = ResNet(depth=depth)
    roles = roles_from_model(model)
    counts = [sum(r.role == role for r in roles.values())
              for role in (PRE_RELU, PRE_ADD)]
    assert tuple(counts) == _expected_counts(depth)
    assert roles['bn1'].stage == 'stem' and roles['bn1'].role == PRE_RELU
    last = 'bn3' if depth >= 50 else 'bn2'
    assert roles[f'layer2.0.{last}'].role == PRE_ADD
    assert roles['layer2.0.downsample.1'].role == PRE_ADD
    assert roles['layer4.1.bn1'] .stage == 'layer4'
    # names alone (the report's path) give the same answer
    assert roles_from_names(roles) == roles


@pytest.mark.parametrize('kind', ['ResNetV1d', 'ResNeXt'])
def test_mmdet_resnet_variants(kind):
    from mmdet.models import backbones
    kwargs = dict(groups=32, base_width=4) if kind == 'ResNeXt' else {}
    model = getattr(backbones, kind)(depth=50, **kwargs)
    roles = roles_from_model(model)
    stem_bns = 3 if kind == 'ResNetV1d' else 1
    counts = [sum(r.role == role for r in roles.values())
              for role in (PRE_RELU, PRE_ADD)]
    assert tuple(counts) == _expected_counts(50, stem_bns)
    assert roles_from_names(roles) == roles


def test_detector_backbone_roles():
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    from conftest import CONFIGS
    cfg = Config.fromfile(str(CONFIGS / 'faster_rcnn_r50_psbn.py'))
    model = MODELS.build(cfg.model)
    roles = roles_from_model(model)
    assert roles['backbone.bn1'].role == PRE_RELU
    assert roles['backbone.layer3.5.bn2'].role == PRE_RELU
    assert roles['backbone.layer3.5.bn3'].role == PRE_ADD


class TorchvisionBottleneck(nn.Module):
    """The layout of torchvision's Bottleneck (named as torchvision does)."""

    def __init__(self, cin, planes, downsample):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(
            nn.Conv2d(cin, planes * 4, 1, bias=False),
            nn.BatchNorm2d(planes * 4)) if downsample else None

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


TorchvisionBottleneck.__name__ = 'Bottleneck'


class TorchvisionResNet(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(TorchvisionBottleneck(8, 4, True),
                                    TorchvisionBottleneck(16, 4, False))


def test_torchvision_style_resnet_roles():
    roles = roles_from_model(TorchvisionResNet())
    assert {n: (r.stage, r.role) for n, r in roles.items()} == {
        'bn1': ('stem', PRE_RELU),
        'layer1.0.bn1': ('layer1', PRE_RELU),
        'layer1.0.bn2': ('layer1', PRE_RELU),
        'layer1.0.bn3': ('layer1', PRE_ADD),
        'layer1.0.downsample.1': ('layer1', PRE_ADD),
        'layer1.1.bn1': ('layer1', PRE_RELU),
        'layer1.1.bn2': ('layer1', PRE_RELU),
        'layer1.1.bn3': ('layer1', PRE_ADD),
    }


class Untraceable(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: FX cannot trace it
            return torch.relu(self.norm(self.conv(x)))
        return self.norm(self.conv(x))


def test_untraceable_model_names_the_untouched_layers():
    roles = roles_from_model(Untraceable())
    assert roles['norm'].role is None
    assert unplaced(roles) == ['norm']


class AddAfterBN(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)
        self.norm2 = nn.BatchNorm2d(3)

    def forward(self, x):
        return torch.relu(self.norm(self.conv(x)) + x) + torch.relu(
            self.norm2(x))


def test_fx_trace_never_calls_a_pre_add_bn_pre_relu():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        roles = roles_from_model(AddAfterBN())
    assert roles['norm'].role is None
    assert roles['norm2'].role == PRE_RELU


def test_conv_module_order_places_fpn_norms_and_they_are_revived():
    """Issue 39, item 8: an FPN with psBN (mmcv ConvModule, order conv ->
    norm -> act, ReLU): every norm is pre-ReLU from the declared order (FX
    cannot trace ConvModule, so before, every one was unplaced), and a dead
    channel is revived (the shift: no known reader)."""
    from mmdet.models.necks import FPN
    from psbn_mmdet import PostShiftController
    torch.manual_seed(0)
    fpn = FPN(in_channels=[8, 16], out_channels=8, num_outs=2,
              norm_cfg=dict(type='psBN', window=2), act_cfg=dict(type='ReLU'))
    roles = roles_from_model(fpn)
    assert {n: r.role for n, r in roles.items()} == {
        f'{kind}.{i}.bn': PRE_RELU for kind in ('lateral_convs', 'fpn_convs')
        for i in (0, 1)}
    assert not unplaced(roles)
    with torch.no_grad():
        fpn.lateral_convs[0].bn.bias[3] = -50.0
    optimizer = torch.optim.SGD(fpn.parameters(), lr=0.0)
    controller = PostShiftController(fpn, optimizer)
    assert controller.revival_of('lateral_convs.0.bn') == 'shift'
    for _ in range(2):
        inputs = (torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8))
        loss = sum(o.mean() for o in fpn(inputs))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        result = controller.step()
    assert result.shifted_channels['lateral_convs.0.bn'].nonzero().flatten(
    ).tolist() == [3]
    assert fpn.lateral_convs[0].bn.bias[3].item() > -50.0
    # a norm after the activation, or before the conv, is not pre-ReLU
    from mmcv.cnn import ConvModule
    late = ConvModule(3, 4, 3, norm_cfg=dict(type='BN'),
                      order=('conv', 'act', 'norm'))
    assert roles_from_model(late)['bn'].role != PRE_RELU
