"""``PrunedResNet``: mmdet's ResNet with a width of its own for every block.

What ``tools/prune_dead.py`` writes into a pruned config::

    custom_imports = dict(imports=['psbn_mmdet.models.backbones.pruned_resnet'],
                          allow_failed_imports=False)
    model = dict(backbone=dict(type='PrunedResNet', depth=18,
                               block_widths=[[32, 29], [64, 64], ...], ...))

Only the channels *inside* a residual block change: the output of a
BasicBlock's ``conv1`` (``bn1``), of a Bottleneck's ``conv1`` and ``conv2``
(``bn1``, ``bn2``).  The channels between blocks, the stem and the stage
outputs keep ResNet's widths, so necks, heads and checkpoints' other keys are
untouched and a pruned checkpoint loads strictly (the same keys as ResNet's,
narrower tensors).  Importing this module imports mmdet and registers the
class in mmdet's ``MODELS``; ``import psbn_mmdet`` alone does not.
"""
from __future__ import annotations

import torch
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck, ResNet
from mmdet.registry import MODELS
from torch import nn


def _resized_conv(conv: nn.Conv2d, conv_cfg, in_channels: int,
                  out_channels: int) -> nn.Module:
    """A conv like ``conv`` (kernel, stride, padding, dilation, groups and
    bias kept) with other channel counts."""
    return build_conv_layer(conv_cfg, in_channels, out_channels,
                            kernel_size=conv.kernel_size, stride=conv.stride,
                            padding=conv.padding, dilation=conv.dilation,
                            groups=conv.groups, bias=conv.bias is not None)


@MODELS.register_module()
class PrunedResNet(ResNet):
    """mmdet's :class:`~mmdet.models.backbones.ResNet` with per-block widths.

    Every argument of ``ResNet``, plus:

    Args:
        block_widths (list[list]): one list per stage, one entry per block:
            for BasicBlock (depth 18, 34) the width of ``conv1``/``bn1``, an
            int; for Bottleneck (depth 50, 101, 152) the widths of
            ``conv1``/``bn1`` and ``conv2``/``bn2``, a pair.  Each width is
            between 1 and the block's ``planes`` (ResNet's width).
        channels_last (bool): keep the weights and compute in the
            channels-last memory format (NHWC) and return ordinary
            contiguous (NCHW) features.  On CPU this is oneDNN's fast path,
            where most of the removed channels' FLOPs turn into time (in
            NCHW PyTorch reorders each conv's weights and activations on
            every call; docs/prune.md measures both).  The features stay NCHW
            because mmcv's ``RoIAlign`` ignores strides and reads
            channels-last features wrongly.  The numbers are the same up to
            the order of summation.  Default: False.

    The widths of the stem, of each block's last conv and of the downsample
    paths are ResNet's.  Dilation, strides, ``style``, ``deep_stem``,
    ``avg_down``, ``frozen_stages``, ``norm_eval`` and ``norm_cfg`` behave as
    in ResNet; ``dcn`` and ``plugins`` are not supported (they act on the
    pruned channels).

    Example:
        >>> import torch
        >>> net = PrunedResNet(depth=18, block_widths=[[64, 10], [128, 128],
        ...                                            [256, 256], [512, 1]])
        >>> net.layer1[1].conv1
        Conv2d(64, 10, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
        >>> _ = net.eval()  # mmdet's ResNet.train() returns None
        >>> [tuple(f.shape) for f in net(torch.rand(1, 3, 64, 64))]
        [(1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4), (1, 512, 2, 2)]
    """

    def __init__(self, block_widths, depth, channels_last=False, **kwargs):
        if kwargs.get('dcn') is not None or kwargs.get('plugins') is not None:
            raise ValueError('PrunedResNet supports neither dcn nor plugins')
        if depth not in self.arch_settings:
            raise KeyError(f'invalid depth {depth} for resnet')
        block, stage_blocks = self.arch_settings[depth]
        num_stages = kwargs.get('num_stages', 4)
        base = kwargs.get('base_channels', 64)
        self._block_widths = self._check_widths(
            block_widths, block, stage_blocks[:num_stages],
            [base * 2**i for i in range(num_stages)])
        super().__init__(depth=depth, **kwargs)
        self.block_widths = self._block_widths
        self.channels_last = bool(channels_last)
        if self.channels_last:
            # loading a checkpoint copies into these tensors: the format stays
            self.to(memory_format=torch.channels_last)

    def forward(self, x):
        """ResNet's forward; with ``channels_last`` the input goes in as
        NHWC and the features come out contiguous (NCHW)."""
        if not self.channels_last:
            return super().forward(x)
        features = super().forward(
            x.contiguous(memory_format=torch.channels_last))
        return tuple(f.contiguous() for f in features)

    @staticmethod
    def _check_widths(widths, block, stage_blocks, planes) -> list[list]:
        per_block = 1 if block is BasicBlock else 2
        shape = (f'{len(stage_blocks)} lists (stages) of {list(stage_blocks)} '
                 f'entries (blocks), each '
                 f'{"an int" if per_block == 1 else "a pair of ints"}')
        if not isinstance(widths, (list, tuple)) or len(widths) != len(
                stage_blocks):
            raise ValueError(f'block_widths must be {shape}')
        checked = []
        for stage, (stage_widths, blocks, limit) in enumerate(
                zip(widths, stage_blocks, planes), 1):
            if not isinstance(stage_widths, (list, tuple)) or len(
                    stage_widths) != blocks:
                raise ValueError(f'block_widths must be {shape}; stage '
                                 f'{stage} has {stage_widths!r}')
            stage_checked = []
            for entry in stage_widths:
                values = [entry] if per_block == 1 else entry
                if (not isinstance(values, (list, tuple))
                        or len(values) != per_block
                        or not all(isinstance(v, int) and 1 <= v <= limit
                                   for v in values)):
                    raise ValueError(
                        f'block_widths: stage {stage} entry {entry!r} must '
                        f'be {"an int" if per_block == 1 else "a pair"} '
                        f'between 1 and {limit}')
                stage_checked.append(entry if per_block == 1 else
                                     tuple(values))
            checked.append(stage_checked)
        return checked

    def make_res_layer(self, **kwargs):
        """ResNet's stage, then each block narrowed to its widths."""
        layer = super().make_res_layer(**kwargs)
        widths = self._block_widths[len(self.res_layers)]
        for block, width in zip(layer, widths):
            self._narrow(block, width)
        return layer

    def _narrow(self, block: nn.Module, width) -> None:
        if isinstance(block, Bottleneck):
            names = [('conv1', block.norm1_name, 'conv2'),
                     ('conv2', block.norm2_name, 'conv3')]
            widths = list(width)
        else:
            assert isinstance(block, BasicBlock)
            names = [('conv1', block.norm1_name, 'conv2')]
            widths = [width]
        for (conv_name, norm_name, next_name), channels in zip(names, widths):
            conv, after = getattr(block, conv_name), getattr(block, next_name)
            if conv.out_channels == channels:
                continue
            setattr(block, conv_name, _resized_conv(
                conv, self.conv_cfg, conv.in_channels, channels))
            setattr(block, next_name, _resized_conv(
                after, self.conv_cfg, channels, after.out_channels))
            _, norm = build_norm_layer(self.norm_cfg, channels)
            setattr(block, norm_name, norm)
