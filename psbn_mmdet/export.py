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

from .io.builders import build_model, mmdet_registries
from .io.checkpoint import check_state_dict, read_checkpoint, save_model
from .models.layers import PSBN_OPTIONS
from .utils.config import load_config
from .utils.errors import UserError

#: psBN config type -> the stock type it exports to
EXPORTED_NORM = {'psBN': 'BN', 'psSyncBN': 'SyncBN'}
#: hooks that exist only with psbn_mmdet imported
PSBN_HOOKS = ('PostShiftHook', 'CollapseMonitorHook')


def _types(node) -> set[str]:
    """Every registry ``type`` named in a config tree."""
    if isinstance(node, dict):
        found = {node['type']} if isinstance(node.get('type'), str) else set()
        return found.union(*(_types(value) for value in node.values()))
    if isinstance(node, (list, tuple)):
        return set().union(*(_types(value) for value in node))
    return set()


def needed_modules(model_cfg) -> dict[str, str]:
    """``{type: module}`` of the psbn_mmdet classes a model config still
    uses (such as ``PrunedResNet``): the modules that register them."""
    _, models = mmdet_registries()
    needed = {}
    for name in sorted(_types(model_cfg)):
        cls = models.get(name) if '.' not in name else None
        module = getattr(cls, '__module__', '')
        if module.split('.')[0] == 'psbn_mmdet':
            needed[name] = module
    return needed


def bn_config(cfg):
    """A new mmengine ``Config`` with psBN replaced by stock BN.

    norm_cfg types are mapped (psBN options dropped), psbn_mmdet's hooks
    removed, and psbn_mmdet's ``custom_imports`` entries replaced by the
    modules the model still needs (:func:`needed_modules`; none for a model
    of mmdet's own classes).
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
    imports = data.pop('custom_imports', None) or {}
    kept = [m for m in imports.get('imports', [])
            if m.split('.')[0] != 'psbn_mmdet']
    kept += sorted(set(needed_modules(data['model']).values()))
    if kept:
        data['custom_imports'] = dict(imports, imports=kept,
                                      allow_failed_imports=False)
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
    for name, module in needed_modules(bn_cfg.model).items():
        warnings.append(f'the exported model uses {name}: its config imports '
                        f'{module}, so loading it needs psbn_mmdet installed')
    name = osp.splitext(osp.basename(config_path))[0]
    exported = Exported(osp.join(out_dir, f'{name}_bn.py'),
                        osp.join(out_dir, f'{name}_bn.pth'), warnings)
    bn_cfg.load_from = None
    save_model(bn_cfg, checkpoint.state, checkpoint.meta, exported.config,
               exported.checkpoint)
    return exported
