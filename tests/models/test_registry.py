"""psBN inside MMDetection: registry, names, state dicts, checkpoint loading."""
import pytest
import torch
from mmcv.cnn import build_norm_layer
from mmengine.runner.checkpoint import load_checkpoint

import psbn_mmdet  # noqa: F401
from conftest import resnet
from psbn_mmdet import psBN, psSyncBN


@pytest.mark.parametrize('type_, cls', [('psBN', psBN), ('psSyncBN', psSyncBN)])
def test_build_norm_layer_names_it_like_bn(type_, cls):
    name, layer = build_norm_layer(dict(type=type_, window=7), 16, postfix=2)
    assert name == 'bn2'
    assert type(layer) is cls and layer.window == 7
    assert layer.num_features == 16 and layer.eps == 1e-5


def test_build_norm_layer_rejects_unknown_option_by_name():
    with pytest.raises(TypeError, match="unknown option 'windows'"):
        build_norm_layer(dict(type='psBN', windows=7), 16)


def test_resnet50_state_dict_is_identical_with_psbn_and_bn():
    bn_net, ps_net = resnet(50, 'BN'), resnet(50, 'psBN')
    bn_sd, ps_sd = bn_net.state_dict(), ps_net.state_dict()
    assert list(bn_sd) == list(ps_sd)
    assert all(bn_sd[k].shape == ps_sd[k].shape for k in bn_sd)
    assert sum(isinstance(m, psBN) for m in ps_net.modules()) == 53


def torchvision_resnet50_state_dict(seed=0):
    """Random values under torchvision's ResNet-50 key names and shapes."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(name, out_c, in_c, k):
        sd[f'{name}.weight'] = torch.randn(out_c, in_c, k, k, generator=g)

    def bn(name, c):
        sd[f'{name}.weight'] = torch.rand(c, generator=g)
        sd[f'{name}.bias'] = torch.randn(c, generator=g)
        sd[f'{name}.running_mean'] = torch.randn(c, generator=g)
        sd[f'{name}.running_var'] = torch.rand(c, generator=g) + 0.5
        sd[f'{name}.num_batches_tracked'] = torch.tensor(100)

    conv('conv1', 64, 3, 7)
    bn('bn1', 64)
    inplanes = 64
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512),
                                             (3, 4, 6, 3)), start=1):
        for j in range(blocks):
            p = f'layer{i}.{j}'
            conv(f'{p}.conv1', planes, inplanes, 1)
            bn(f'{p}.bn1', planes)
            conv(f'{p}.conv2', planes, planes, 3)
            bn(f'{p}.bn2', planes)
            conv(f'{p}.conv3', planes * 4, planes, 1)
            bn(f'{p}.bn3', planes * 4)
            if j == 0:
                conv(f'{p}.downsample.0', planes * 4, inplanes, 1)
                bn(f'{p}.downsample.1', planes * 4)
            inplanes = planes * 4
    sd['fc.weight'] = torch.randn(1000, 2048, generator=g)
    sd['fc.bias'] = torch.randn(1000, generator=g)
    return sd


def test_torchvision_checkpoint_loads_into_psbn_backbone(tmp_path):
    sd = torchvision_resnet50_state_dict()
    path = tmp_path / 'resnet50_torchvision.pth'
    torch.save(sd, path)
    backbone = resnet(50, 'psBN')
    # strict: every backbone key present, nothing but the classifier left over
    missing, unexpected = backbone.load_state_dict(
        {k: v for k, v in sd.items() if not k.startswith('fc.')}, strict=True)
    assert not missing and not unexpected
    # mmdet's own path for init_cfg=Pretrained (torchvision://resnet50)
    fresh = resnet(50, 'psBN', init_cfg=dict(type='Pretrained',
                                              checkpoint=str(path)))
    fresh.init_weights()
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, sd[key]), key
    load_checkpoint(resnet(50, 'psBN'), str(path), strict=False)


def test_mmdet_init_cfg_initializes_psbn_as_bn():
    from mmdet.models.backbones import ResNet
    torch.manual_seed(0)
    nets = [ResNet(depth=18, norm_cfg=dict(type=t)) for t in ('BN', 'psBN')]
    for net in nets:
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                torch.nn.init.normal_(m.weight)
                torch.nn.init.normal_(m.bias)
        net.init_weights()
    bn_sd, ps_sd = (n.state_dict() for n in nets)
    for key in bn_sd:
        if '.bn' in key or key.startswith('bn'):
            assert torch.equal(bn_sd[key], ps_sd[key]), key


def test_hooks_are_registered_as_their_classes():
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS
    from psbn_mmdet import CollapseMonitorHook, PostShiftHook
    assert HOOKS.get('PostShiftHook') is PostShiftHook
    assert HOOKS.get('CollapseMonitorHook') is CollapseMonitorHook
    assert issubclass(PostShiftHook, Hook)
