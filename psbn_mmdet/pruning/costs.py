"""What a backbone costs per stage (parameters, conv FLOPs), and what a plan saves."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..core.criteria import GAMMA_THRESHOLD
from ..core.roles import STAGES
from ..io.builders import load_backbone
from .plan import SUPPORTED, ChannelPlan, find_removable


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


def removable_per_stage(backbone: nn.Module,
                        dead: Mapping[str, torch.Tensor], input_shape,
                        gamma_threshold: float = GAMMA_THRESHOLD
                        ) -> dict[str, dict[str, int]]:
    """What the tool would remove, per stage and ``total``: ``channels``,
    the conv ``flops`` they cost and the stage's ``flops`` in all
    (``stage_flops``), for one image of ``input_shape`` (the report's
    removable column)."""
    plans = find_removable(backbone, dead, gamma_threshold)
    removed = removable_flops(backbone, plans, input_shape)
    costs = stage_costs(backbone, input_shape)
    rows = {stage: dict(channels=0, flops=removed[stage],
                        stage_flops=costs[stage].flops) for stage in STAGES}
    for plan in plans:
        rows[plan.bn.stage]['channels'] += int(plan.removed.sum())
    rows['total'] = {key: sum(row[key] for row in rows.values())
                     for key in ('channels', 'flops', 'stage_flops')}
    return rows


def removable_column(report, checkpoint, probe,
                     config=None) -> dict[str, dict[str, int]] | None:
    """The collapse report's ``removable`` column for a report measured
    with ``probe``: :func:`removable_per_stage` of the backbone of
    ``config`` (default: the probe's model config) with the report's dead
    channels, at the first batch's input size; None for backbones the
    pruning tool does not support."""
    backbone = load_backbone(config or probe.model_config, checkpoint)
    if type(backbone).__name__ not in SUPPORTED:
        return None
    dead = {layer.name.removeprefix(checkpoint.backbone_prefix): layer.dead
            for layer in report.layers if layer.dead is not None}
    inputs, _ = next(iter(probe.batches()))
    return removable_per_stage(backbone, dead, tuple(inputs.shape[1:]),
                               report.gamma_threshold)
