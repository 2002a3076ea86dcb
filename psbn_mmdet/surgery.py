"""Model surgery: swap psBN and BN in modules, configs and checkpoints.

psBN and BN share their state-dict layout, so a swap copies parameters and
buffers and nothing else.  :func:`export_bn` turns a psBN training run into a
plain-BN config and checkpoint that stock mmdet loads strictly, without
``psbn_mmdet`` installed.
"""
from __future__ import annotations

import os
import os.path as osp

import torch
from torch import nn

from .norm import PSBN_TYPES, psBN, psSyncBN

#: psBN config type -> the stock type it exports to
EXPORTED_NORM = {'psBN': 'BN', 'psSyncBN': 'SyncBN'}
#: hooks that exist only with psbn_mmdet imported
PSBN_HOOKS = ('PostShiftHook', 'CollapseMonitorHook')


def _swap(module: nn.Module, new: nn.Module) -> nn.Module:
    new.load_state_dict(module.state_dict())
    new.train(module.training)
    new.weight.requires_grad_(module.weight.requires_grad)
    new.bias.requires_grad_(module.bias.requires_grad)
    return new


def to_bn(module: nn.Module) -> nn.Module:
    """Replace every psBN (psSyncBN) by ``BatchNorm2d`` (``SyncBatchNorm``).

    Returns a new module for a leaf, converts children in place otherwise.
    """
    if isinstance(module, PSBN_TYPES):
        stock = nn.SyncBatchNorm if isinstance(module,
                                               psSyncBN) else nn.BatchNorm2d
        kwargs = dict(eps=module.eps, momentum=module.momentum,
                      affine=module.affine,
                      track_running_stats=module.track_running_stats)
        if isinstance(module, psSyncBN):
            kwargs['process_group'] = module.process_group
        return _swap(module, stock(module.num_features, **kwargs).to(
            module.weight.device))
    for name, child in module.named_children():
        setattr(module, name, to_bn(child))
    return module


def to_psbn(module: nn.Module, **options) -> nn.Module:
    """Replace every ``BatchNorm2d`` / ``SyncBatchNorm`` by psBN / psSyncBN.

    ``options`` are psBN's (``window``, ``active_fraction``, ``gamma_min``).
    """
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)) and not \
            isinstance(module, PSBN_TYPES) and module.affine:
        cls = psSyncBN if isinstance(module, nn.SyncBatchNorm) else psBN
        new = cls(module.num_features, eps=module.eps,
                  momentum=module.momentum, affine=module.affine,
                  track_running_stats=module.track_running_stats, **options)
        return _swap(module, new.to(module.weight.device))
    for name, child in module.named_children():
        setattr(module, name, to_psbn(child, **options))
    return module


def bn_config(cfg):
    """A new mmengine ``Config`` with psBN replaced by stock BN.

    norm_cfg types are mapped (psBN options dropped), psbn_mmdet's hooks and
    its ``custom_imports`` entry removed.
    """
    from mmengine.config import Config
    data = cfg.to_dict()

    def strip(node):
        if isinstance(node, dict):
            if node.get('type') in EXPORTED_NORM:
                for key in ('window', 'active_fraction', 'gamma_min'):
                    node.pop(key, None)
                node['type'] = EXPORTED_NORM[node['type']]
            for value in node.values():
                strip(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                strip(value)

    strip(data['model'])
    data['custom_hooks'] = [h for h in data.get('custom_hooks', [])
                            if h.get('type') not in PSBN_HOOKS]
    imports = data.pop('custom_imports', None)
    if imports is not None:
        kept = [m for m in imports.get('imports', [])
                if m.split('.')[0] != 'psbn_mmdet']
        if kept:
            data['custom_imports'] = dict(imports, imports=kept)
    return Config(data)


def export_bn(config_path: str, checkpoint_path: str, out_dir: str
              ) -> tuple[str, str]:
    """Write ``<name>_bn.py`` and ``<name>_bn.pth`` for stock mmdet.

    The checkpoint keeps ``state_dict`` and ``meta`` only (no optimizer,
    MessageHub or psBN counters), so stock mmdet loads it strictly and with
    ``torch.load(weights_only=True)``.  Returns the two paths.
    """
    from mmengine.config import Config
    if not osp.isfile(config_path):
        raise FileNotFoundError(f'config file not found: {config_path}')
    if not osp.isfile(checkpoint_path):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint_path}')
    checkpoint = torch.load(checkpoint_path, map_location='cpu',
                            weights_only=True)
    state_dict = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state_dict, dict) or not state_dict:
        raise ValueError(f'not a checkpoint with a state dict: '
                         f'{checkpoint_path}')
    cfg = bn_config(Config.fromfile(config_path))
    name = osp.splitext(osp.basename(config_path))[0]
    os.makedirs(out_dir, exist_ok=True)
    out_config = osp.join(out_dir, f'{name}_bn.py')
    out_checkpoint = osp.join(out_dir, f'{name}_bn.pth')
    cfg.load_from = None
    cfg.dump(out_config)
    meta = checkpoint.get('meta', {}) if 'state_dict' in checkpoint else {}
    meta = {k: v for k, v in meta.items() if k != 'cfg'}
    meta['cfg'] = cfg.pretty_text
    torch.save({'meta': meta, 'state_dict': state_dict}, out_checkpoint)
    return out_config, out_checkpoint
