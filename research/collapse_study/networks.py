"""The study's networks: a compact BasicNet and mmdet's ResNet-18.

* *BasicNet*: six conv-BN-ReLU layers, two max-pools and a two-layer FC head,
  in the spirit of Mehta et al. (2019); psBN by :meth:`psBN.convert_bn`.
* a small ResNet-18 built by mmdet's ``ResNet`` with
  ``norm_cfg=dict(type='psBN'|'BN')``, the plugin's real path.

Both run channels-last, the faster layout for CPU convolutions.
"""
from __future__ import annotations

import logging

import torch
from mmengine.logging import MMLogger
from torch import nn

from psbn_mmdet import psBN
from psbn_mmdet.models.layers import PSBN_TYPES

from .variants import XHAT_STATISTICS, Variant

#: BasicNet's conv widths; 'M' is a 2×2 max-pool
BASICNET_LAYERS = (32, 64, 'M', 64, 128, 'M', 128, 128)


class BasicNet(nn.Sequential):
    """conv3×3-BN-ReLU stack with max-pools and a two-layer FC head."""

    def __init__(self, layers=BASICNET_LAYERS, in_channels: int = 1,
                 num_classes: int = 10, hidden: int = 64) -> None:
        modules, channels = [], in_channels
        for layer in layers:
            if layer == 'M':
                modules.append(nn.MaxPool2d(2))
                continue
            conv = nn.Conv2d(channels, layer, 3, padding=1, bias=False)
            nn.init.xavier_uniform_(conv.weight,
                                    gain=nn.init.calculate_gain('relu'))
            modules += [conv, nn.BatchNorm2d(layer), nn.ReLU(inplace=True)]
            channels = layer
        modules += [
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(channels, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes)
        ]
        super().__init__(*modules)


class ResNetClassifier(nn.Module):
    """mmdet's ResNet-18 (3 stages, narrow) with a global-pool linear head."""

    def __init__(self, norm_cfg: dict, base_channels: int = 16,
                 num_classes: int = 10) -> None:
        super().__init__()
        from mmdet.models.backbones import ResNet

        import psbn_mmdet  # noqa: F401  (registers psBN for build_norm_layer)
        self.backbone = ResNet(
            depth=18, in_channels=1, base_channels=base_channels,
            num_stages=3, strides=(1, 2, 2), dilations=(1, 1, 1),
            out_indices=(2, ), norm_cfg=norm_cfg, norm_eval=False,
            zero_init_residual=False)
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)  # init_weights logs every parameter
        try:
            self.backbone.init_weights()
        finally:
            logger.setLevel(level)
        self.head = nn.Linear(base_channels * 4, num_classes)

    def forward(self, x):
        features = self.backbone(x)[-1]
        return self.head(features.mean(dim=(2, 3)))


#: network name -> input size (pixels per side)
INPUT_SIZE = {'basicnet': 16, 'resnet18': 32}


#: ResNetClassifier's base_channels at width 1
RESNET_BASE_CHANNELS = 16


def scaled_channels(channels: int, width: float) -> int:
    """``channels`` × ``width``, rounded, at least 1."""
    return max(1, round(channels * width))


def build_network(network: str, variant: Variant, width: float = 1.0,
                  num_classes: int = 10) -> nn.Module:
    """``width`` multiplies every conv layer's channels (BasicNet's conv
    widths, ResNet-18's ``base_channels``); BasicNet's FC head keeps its 64
    hidden units.  Width 1 is the collapse study's network."""
    if network == 'basicnet':
        layers = tuple(layer if layer == 'M' else
                       scaled_channels(layer, width)
                       for layer in BASICNET_LAYERS)
        model = BasicNet(layers, num_classes=num_classes)
        if variant.psbn:
            model = psBN.convert_bn(model, **variant.options)
    elif network == 'resnet18':
        norm_cfg = (dict(type='psBN', requires_grad=True, **variant.options)
                    if variant.psbn else dict(type='BN', requires_grad=True))
        model = ResNetClassifier(
            norm_cfg, scaled_channels(RESNET_BASE_CHANNELS, width),
            num_classes)
    else:
        raise ValueError(f'unknown network {network!r}')
    statistics_class = XHAT_STATISTICS[variant.xhat]
    if statistics_class is not None:
        for module in model.modules():
            if isinstance(module, PSBN_TYPES):
                module.window_stats = statistics_class(module.window)
    # channels-last: on CPU mkldnn's convolutions and max-pools run the
    # training step ~20% faster than in NCHW (docs/collapse_study.md).  Not
    # for a ResNet-18 narrower than base 8: in channels-last its training
    # steps corrupt the heap on torch 2.13 CPU (base 2, 4, 6; glibc aborts,
    # "corrupted size vs. prev_size"), in NCHW they run
    if network == 'resnet18' and model.backbone.base_channels < 8:
        return model
    return model.to(memory_format=torch.channels_last)
