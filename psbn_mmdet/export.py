"""Exporting a psBN run for stock mmdet: a plain-BN config and checkpoint.

psBN and BN share their state-dict layout; :meth:`psBN.convert_bn` and
:meth:`psBN.revert` swap the layers of a live model (same Parameters).
:func:`export_bn` turns a psBN training run into a BN config and checkpoint
that mmdet loads strictly, without ``psbn_mmdet`` unless the model still
needs one of its modules (a pruned backbone, ``PrunedResNet``).
"""
from __future__ import annotations

import os.path as osp
from dataclasses import dataclass, field

import torch
from mmengine.config import Config

from .io.builders import build_model
from .io.checkpoint import check_state_dict, read_checkpoint, save_model
from .models.layers import PSBN_OPTIONS
from .utils.config import load_config
from .utils.errors import UserError

#: psBN config type -> the stock type it exports to
EXPORTED_NORM = {'psBN': 'BN', 'psSyncBN': 'SyncBN'}
#: hooks that exist only with psbn_mmdet imported
PSBN_HOOKS = ('PostShiftHook', 'CollapseMonitorHook')


def bn_config(cfg):
    """A new mmengine ``Config`` with psBN replaced by stock BN.

    norm_cfg types are mapped (psBN options dropped), psbn_mmdet's hooks and
    its ``custom_imports`` entry removed.
    """
    data = cfg.to_dict()

    def strip(node):
        if isinstance(node, dict):
            if node.get('type') in EXPORTED_NORM:
                for key in PSBN_OPTIONS:
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


@dataclass
class Exported:
    """What :func:`export_bn` wrote, and what the tool should say about it."""
    config: str
    checkpoint: str
    warnings: list[str] = field(default_factory=list)


def export_bn(config_path: str, checkpoint_path: str, out_dir: str
              ) -> Exported:
    """Write ``<name>_bn.py`` and ``<name>_bn.pth`` for stock mmdet.

    The checkpoint must load strictly into the config's model (checked
    before anything is written).  The output keeps ``state_dict`` and
    ``meta`` only (no optimizer, MessageHub or psBN counters), so stock mmdet
    loads it strictly and with ``torch.load(weights_only=True)``.  Both files
    are written, or neither.

    Raises:
        UserError: a missing or unreadable config or checkpoint, a checkpoint
            that does not match the config's model, an unwritable out dir.
    """
    cfg = load_config(config_path)
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise UserError(f'{out_dir}: not a directory')
    checkpoint = read_checkpoint(checkpoint_path)
    bn_cfg = bn_config(cfg)
    check_state_dict(build_model(bn_cfg.model).state_dict(), checkpoint.state,
                     f'{checkpoint_path} does not match the model of '
                     f'{config_path}')
    warnings = []
    nonfinite = [k for k, v in checkpoint.state.items()
                 if v.is_floating_point() and not torch.isfinite(v).all()]
    if nonfinite:
        warnings.append(f'{len(nonfinite)} tensor(s) of {checkpoint_path} '
                        f'hold NaN or Inf (first: {nonfinite[0]})')
    name = osp.splitext(osp.basename(config_path))[0]
    exported = Exported(osp.join(out_dir, f'{name}_bn.py'),
                        osp.join(out_dir, f'{name}_bn.pth'), warnings)
    bn_cfg.load_from = None
    save_model(bn_cfg, checkpoint.state, checkpoint.meta, exported.config,
               exported.checkpoint)
    return exported
