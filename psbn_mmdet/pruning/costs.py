"""What a backbone costs per stage (parameters, conv FLOPs), and what a plan saves."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..core.roles import STAGES
from ..io.builders import load_backbone
from .calibrate import calibrate, compositions
from .plan import SUPPORTED, ChannelPlan, find_removable, internal_bns


def stage_of(name: str) -> str:
    """The stage of a backbone module name: ``layerN`` or ``stem``."""
    first = name.split('.')[0]
    return first if first in STAGES[1:] else 'stem'


def conv_macs(backbone: nn.Module, input_shape) -> dict[str, int]:
    """Multiply-accumulates of each conv of ``backbone`` for one image of
    ``input_shape`` (C, H, W), by module name."""
    macs, handles = {}, []
    for name, module in backbone.named_modules():
        if isinstance(module, nn.Conv2d):

            def hook(module, args, output, name=name):
                k = module.kernel_size[0] * module.kernel_size[1]
                macs[name] = (output[0].numel() * k * module.in_channels
                              // module.groups)

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            backbone(torch.zeros(1, *input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return macs


@dataclass
class StageCost:
    params: int = 0
    flops: int = 0  # convolutions' multiply-accumulates, per image


def stage_costs(backbone: nn.Module, input_shape) -> dict[str, StageCost]:
    """Parameters and conv FLOPs (multiply-accumulates) per stage and in
    total, for one image of ``input_shape`` (C, H, W)."""
    costs = {stage: StageCost() for stage in STAGES}
    for name, param in backbone.named_parameters():
        costs[stage_of(name)].params += param.numel()
    for name, count in conv_macs(backbone, input_shape).items():
        costs[stage_of(name)].flops += count
    costs['total'] = StageCost(sum(c.params for c in costs.values()),
                               sum(c.flops for c in costs.values()))
    return costs


def removable_flops(backbone: nn.Module, plans: Sequence[ChannelPlan],
                    input_shape) -> dict[str, int]:
    """Conv FLOPs per stage that the plans remove, for one image of
    ``input_shape``, without building the pruned backbone: a removed
    channel takes one output slice of its conv and one input slice of the
    next."""
    macs = conv_macs(backbone, input_shape)
    removed = dict.fromkeys(STAGES, 0)
    for plan in plans:
        count = int(plan.removed.sum())
        if not count:
            continue
        conv = backbone.get_submodule(plan.bn.conv)
        after = backbone.get_submodule(plan.bn.next_conv)
        removed[plan.bn.stage] += (
            macs[plan.bn.conv] * count // conv.out_channels
            + macs[plan.bn.next_conv] * count // after.in_channels)
    return removed


def removable_per_stage(backbone: nn.Module, plans: Sequence[ChannelPlan],
                        input_shape) -> dict[str, dict[str, int]]:
    """What the plans remove, per stage and ``total``: ``channels``, the
    conv ``flops`` they cost and the stage's ``flops`` in all
    (``stage_flops``), for one image of ``input_shape``."""
    removed = removable_flops(backbone, plans, input_shape)
    costs = stage_costs(backbone, input_shape)
    rows = {stage: dict(channels=0, flops=removed[stage],
                        stage_flops=costs[stage].flops) for stage in STAGES}
    for plan in plans:
        rows[plan.bn.stage]['channels'] += int(plan.removed.sum())
    rows['total'] = {key: sum(row[key] for row in rows.values())
                     for key in ('channels', 'flops', 'stage_flops')}
    return rows


def removable_column(report, checkpoint, probe, config=None
                     ) -> dict[str, dict[str, int]] | None:
    """The collapse report's ``removable`` column: what ``prune_dead``
    removes when it calibrates on the probe's images (the same batch
    compositions, :func:`~psbn_mmdet.pruning.calibrate.compositions`, and
    the same rule, :func:`~psbn_mmdet.pruning.plan.find_removable`, at the
    report's thresholds), for the backbone of ``config`` (default: the
    probe's model config); None for backbones the tool does not support."""
    backbone = load_backbone(config or probe.model_config, checkpoint)
    if type(backbone).__name__ not in SUPPORTED:
        return None
    positions = internal_bns(backbone)
    calibration = calibrate(backbone, positions, compositions(probe))
    plans = find_removable(backbone, calibration, report.gamma_threshold,
                           report.activation_threshold)
    return removable_per_stage(backbone, plans, calibration.shape)
