"""What can be removed: the channels inside ResNet blocks, dead or constant.

A channel inside a ResNet block (a BasicBlock's ``bn1``, a Bottleneck's
``bn1`` and ``bn2``; :func:`psbn_mmdet.core.roles.inner_links`) feeds only
the block's next convolution, through a ReLU.  It can go when what it feeds
that convolution is known: *dead* (never active on the calibration images:
after the ReLU it is exactly 0 there) or *constant* (``|γ| < threshold``:
``ReLU(β)``, folded into the next BN's running mean; exact through a 1x1
convolution, through a padded one only inside the image).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.criteria import (ACTIVATION_THRESHOLD, GAMMA_THRESHOLD,
                             collapsed_gamma)
from ..core.roles import STAGES, inner_links
from ..utils.errors import UserError
from .calibrate import Calibration

#: backbone types whose block-internal channels can be removed
SUPPORTED = ('ResNet', 'ResNetV1d', 'PrunedResNet')
#: relative difference of features and detections the tool's self-check
#: allows between the pruned detector and the original
CHECK_TOLERANCE = 1e-5
#: how much folding constants may change the next conv's output, relative
#: to its largest magnitude on the calibration images
FOLD_TOLERANCE = CHECK_TOLERANCE / 10


@dataclass(frozen=True)
class InternalBN:
    """A pre-ReLU BN inside a residual block (backbone module names)."""
    name: str  # 'layer1.0.bn1'
    stage: str
    conv: str  # the conv it normalizes: 'layer1.0.conv1'
    next_conv: str  # the conv its ReLU feeds: 'layer1.0.conv2'
    next_bn: str  # the BN after next_conv: 'layer1.0.bn2'
    #: the next conv adds no padding: a constant input folds exactly
    exact_fold: bool


def internal_bns(backbone: nn.Module) -> list[InternalBN]:
    """The removable positions of an mmdet ResNet, in block order.

    Raises:
        UserError: the backbone has no ResNet blocks.
    """
    found = []
    for stage in STAGES[1:]:
        layer = getattr(backbone, stage, None)
        if layer is None:
            continue
        for index, block in enumerate(layer):
            prefix = f'{stage}.{index}'
            links = inner_links(block)
            if links is None:
                raise UserError(f'{prefix} is a {type(block).__name__}, not '
                                'a BasicBlock or Bottleneck')
            if any(m.groups != 1 for m in block.modules()
                   if isinstance(m, nn.Conv2d)):
                raise UserError(f'{prefix} has grouped convolutions')
            for link in links:
                # without padding every output sees only image pixels
                exact = all(p == 0 for p in getattr(block,
                                                    link.next_conv).padding)
                found.append(InternalBN(
                    f'{prefix}.{link.norm}', stage, f'{prefix}.{link.conv}',
                    f'{prefix}.{link.next_conv}',
                    f'{prefix}.{link.next_norm}', exact))
    if not found:
        raise UserError('no ResNet blocks in the backbone')
    return found


@dataclass
class ChannelPlan:
    """Which channels of one internal BN go, and why."""
    bn: InternalBN
    dead: torch.Tensor  # bool: dead on the calibration images, removed
    #: bool: |γ| < threshold, not dead, removed (a non-zero constant is
    #: folded into next_bn's running_mean)
    folded: torch.Tensor
    #: bool: |γ| < threshold, not dead, left in (a non-zero constant before
    #: a padded conv: folding would change the border)
    kept_constant: torch.Tensor
    constant: torch.Tensor  # ReLU(β) per channel

    @property
    def removed(self) -> torch.Tensor:
        return self.dead | self.folded

    @property
    def keep(self) -> torch.Tensor:
        """Indices of the channels that stay."""
        return (~self.removed).nonzero().flatten()

    @property
    def channels(self) -> int:
        return self.dead.numel()


def find_removable(backbone: nn.Module, calibration: Calibration,
                   gamma_threshold: float = GAMMA_THRESHOLD,
                   activation_threshold: float = ACTIVATION_THRESHOLD,
                   fold_padded: bool = False) -> list[ChannelPlan]:
    """A plan per internal BN of ``backbone`` (a loaded mmdet ResNet), from
    what ``calibration`` measured on it.

    *Dead*: never above ``activation_threshold`` after the ReLU, anywhere
    the network computed (:class:`~psbn_mmdet.pruning.calibrate.
    Calibration`).  *Constant*: ``|γ| < gamma_threshold`` and not dead; its
    output ``ReLU(y)`` is folded as ``ReLU(β)``, which is exact only as far
    as ``ReLU(y)`` stays at that value: a channel is folded when its
    largest distance from it, times the L1 norm of its weights in the next
    conv, keeps the summed change of that conv's output within
    :data:`FOLD_TOLERANCE` of its largest magnitude (so that the tool's
    self-check passes), the nearest first.  ``fold_padded``: also fold
    non-zero constants through padded convs (inexact at the border).  A
    block keeps at least one channel: when all would go, its first dead
    channel (or first constant one, unfolded) stays.
    """
    dead = calibration.dead(activation_threshold)
    plans = []
    for position in internal_bns(backbone):
        bn = backbone.get_submodule(position.name)
        gamma = (bn.weight if bn.weight is not None else
                 torch.ones_like(bn.running_var)).detach().float()
        beta = (bn.bias if bn.bias is not None else
                torch.zeros_like(bn.running_var)).detach().float()
        is_dead = dead.get(position.name, torch.zeros_like(gamma,
                                                           dtype=torch.bool))
        constant = beta.clamp(min=0)
        collapsed = collapsed_gamma(gamma, gamma_threshold) & ~is_dead
        candidates = collapsed & ((constant == 0) | position.exact_fold
                                  | fold_padded)
        foldable = _within_tolerance(backbone, position, calibration,
                                     candidates, constant)
        plan = ChannelPlan(position, is_dead.clone(), foldable,
                           collapsed & ~foldable, constant)
        if bool(plan.removed.all()):
            keep = int((plan.dead if plan.dead.any() else
                        plan.folded).nonzero()[0])
            plan.dead[keep] = False
            plan.folded[keep] = False
        plans.append(plan)
    return plans


def _within_tolerance(backbone: nn.Module, position: InternalBN,
                      calibration: Calibration, candidates: torch.Tensor,
                      constant: torch.Tensor) -> torch.Tensor:
    """The candidates whose fold changes the next conv's output by at most
    FOLD_TOLERANCE of its magnitude, in all (nearest first)."""
    chosen = torch.zeros_like(candidates)
    if not candidates.any() or position.name not in calibration.maxima:
        return chosen
    weight = backbone.get_submodule(position.next_conv).weight.detach()
    cost = (calibration.deviation(position.name, constant)
            * weight.abs().sum((0, 2, 3)).float())
    budget = FOLD_TOLERANCE * calibration.next_scale[position.name]
    spent = 0.0
    for channel in candidates.nonzero().flatten()[
            cost[candidates].argsort()].tolist():
        if spent + float(cost[channel]) > budget:
            break
        spent += float(cost[channel])
        chosen[channel] = True
    return chosen


def check_backbone(cfg) -> str:
    """The type of ``cfg.model.backbone``; raise unless it is supported."""
    backbone = cfg.get('model', {}).get('backbone')
    if backbone is None:
        raise UserError('the config has no model.backbone')
    kind = str(backbone.get('type', '')).split('.')[-1]
    if (kind not in SUPPORTED or backbone.get('dcn') is not None
            or backbone.get('plugins') is not None):
        what = kind if kind not in SUPPORTED else f'{kind} with dcn or plugins'
        raise UserError(f'unsupported backbone {what}: prune_dead supports '
                        f'mmdet\'s {", ".join(SUPPORTED)} without dcn or '
                        'plugins')
    return kind
