"""Removing planned channels: from a state dict, and the config that loads it.

The pruned backbone is a :class:`~psbn_mmdet.models.backbones.PrunedResNet`
(mmdet's ResNet with per-block widths); its state dict has ResNet's keys with
narrower tensors, so a pruned checkpoint loads strictly.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from mmengine.config import Config
from torch import nn

from ..core.roles import inner_links
from .plan import ChannelPlan

#: the module a pruned config imports: it registers ``PrunedResNet``
PRUNED_MODULE = 'psbn_mmdet.models.backbones'


def prune_state_dict(state: Mapping[str, torch.Tensor],
                     plans: Sequence[ChannelPlan],
                     prefix: str = 'backbone.') -> dict[str, torch.Tensor]:
    """A new state dict with the planned channels removed and constants
    folded (``prefix``: of the backbone's keys)."""
    state = dict(state)
    for plan in plans:  # block order: a Bottleneck's bn1 before its bn2
        if not plan.removed.any():
            continue
        keep, bn = plan.keep, plan.bn
        conv, next_conv = f'{prefix}{bn.conv}', f'{prefix}{bn.next_conv}'
        state[f'{conv}.weight'] = state[f'{conv}.weight'][keep].clone()
        if f'{conv}.bias' in state:
            state[f'{conv}.bias'] = state[f'{conv}.bias'][keep].clone()
        for key in ('weight', 'bias', 'running_mean', 'running_var'):
            name = f'{prefix}{bn.name}.{key}'
            if name in state:
                state[name] = state[name][keep].clone()
        weight = state[f'{next_conv}.weight']
        mean = f'{prefix}{bn.next_bn}.running_mean'
        if plan.folded.any() and mean in state:
            folded = plan.folded.nonzero().flatten()
            shift = (weight[:, folded].double().sum((2, 3))
                     @ plan.constant[folded].double())
            state[mean] = (state[mean].double() - shift).to(
                state[mean].dtype)
        state[f'{next_conv}.weight'] = weight[:, keep].clone()
    return state


def block_widths(backbone: nn.Module,
                 plans: Sequence[ChannelPlan] = ()) -> list[list]:
    """``PrunedResNet``'s ``block_widths`` after the plans (a block without
    a plan keeps its width: without plans, the backbone's own widths)."""
    width = {plan.bn.name: plan.channels - int(plan.removed.sum())
             for plan in plans}
    widths = []
    for stage in backbone.res_layers:
        stage_widths = []
        for index, block in enumerate(getattr(backbone, stage)):
            entry = [width.get(f'{stage}.{index}.{link.norm}',
                               getattr(block, link.norm).num_features)
                     for link in inner_links(block)]
            stage_widths.append(entry[0] if len(entry) == 1 else entry)
        widths.append(stage_widths)
    return widths


def pruned_config(cfg, widths: list[list], load_from: str | None = None,
                  channels_last: bool = False):
    """A new mmengine ``Config``: the backbone a ``PrunedResNet`` of these
    widths (no init_cfg: the weights come from the checkpoint; NHWC inside
    with ``channels_last``), the module that registers it in
    ``custom_imports``."""
    data = cfg.to_dict()
    backbone = data['model']['backbone']
    backbone['type'] = 'PrunedResNet'
    backbone['block_widths'] = widths
    if channels_last:  # otherwise as the config says (PrunedResNet: False)
        backbone['channels_last'] = True
    backbone['init_cfg'] = None
    backbone.pop('pretrained', None)
    imports = data.get('custom_imports') or dict(imports=[])
    modules = list(imports.get('imports', []))
    if PRUNED_MODULE not in modules:
        modules.append(PRUNED_MODULE)
    data['custom_imports'] = dict(imports, imports=modules,
                                  allow_failed_imports=False)
    data['load_from'] = load_from
    data['resume'] = False
    return Config(data)
