"""Model surgery: swap psBN and BN in modules, configs and checkpoints.

psBN and BN share their state-dict layout; :meth:`psBN.convert_bn` and
:meth:`psBN.revert` swap the layers of a live model (same Parameters).
:func:`export_bn` turns a psBN training run into a plain-BN config and
checkpoint that stock mmdet loads strictly, without ``psbn_mmdet``.
"""
from __future__ import annotations

import os.path as osp

import torch

from .io.checkpoint import check_state_dict, safe_load
from .utils.config import load_config
from .utils.errors import UserError, one_line
from .utils.files import write_atomically
from .models.layers.psbn import psBN

#: psBN config type -> the stock type it exports to
EXPORTED_NORM = {'psBN': 'BN', 'psSyncBN': 'SyncBN'}
#: hooks that exist only with psbn_mmdet imported
PSBN_HOOKS = ('PostShiftHook', 'CollapseMonitorHook')


#: the conversions, under the names earlier versions exported
to_psbn = psBN.convert_bn
to_bn = psBN.revert


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


def _detector(cfg):
    """The config's model, built by mmdet's registry (weights not
    initialized: nothing is downloaded)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    try:
        return MODELS.build(cfg.model)
    except Exception as error:  # noqa: BLE001 - the config's model is bad
        raise UserError(f'cannot build the model of the config: '
                        f'{one_line(error)}') from None


def export_bn(config_path: str, checkpoint_path: str, out_dir: str
              ) -> tuple[str, str]:
    """Write ``<name>_bn.py`` and ``<name>_bn.pth`` for stock mmdet.

    The checkpoint must load strictly into the config's model (checked
    before anything is written).  The output keeps ``state_dict`` and
    ``meta`` only (no optimizer, MessageHub or psBN counters), so stock mmdet
    loads it strictly and with ``torch.load(weights_only=True)``.  Both files
    are written, or neither.  Returns the two paths.

    Raises:
        UserError: a missing or unreadable config or checkpoint, a checkpoint
            that does not match the config's model, an unwritable out dir.
    """
    import io
    import sys
    from collections.abc import Mapping
    from pathlib import Path
    cfg = load_config(config_path)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f'{out_dir}: not a directory')
    checkpoint = safe_load(checkpoint_path)
    state_dict = (checkpoint.get('state_dict', checkpoint)
                  if isinstance(checkpoint, Mapping) else None)
    if not isinstance(state_dict, Mapping) or not any(
            torch.is_tensor(v) for v in state_dict.values()):
        raise UserError(f'{checkpoint_path}: not a checkpoint with a state '
                        'dict')
    bn_cfg = bn_config(cfg)
    check_state_dict(_detector(bn_cfg).state_dict(), state_dict,
                     f'{checkpoint_path} does not match the model of '
                     f'{config_path}')
    nonfinite = [k for k, v in state_dict.items() if torch.is_tensor(v)
                 and v.is_floating_point() and not torch.isfinite(v).all()]
    if nonfinite:
        print(f'export_bn: warning: {len(nonfinite)} tensor(s) of '
              f'{checkpoint_path} hold NaN or Inf (first: {nonfinite[0]})',
              file=sys.stderr)
    name = osp.splitext(osp.basename(config_path))[0]
    out_config = osp.join(out_dir, f'{name}_bn.py')
    out_checkpoint = osp.join(out_dir, f'{name}_bn.pth')
    bn_cfg.load_from = None
    meta = checkpoint.get('meta', {}) if 'state_dict' in checkpoint else {}
    meta = {k: v for k, v in meta.items() if k != 'cfg'}
    meta['cfg'] = bn_cfg.pretty_text
    weights = io.BytesIO()
    torch.save({'meta': meta, 'state_dict': dict(state_dict)}, weights)
    write_atomically({out_config: bn_cfg.pretty_text.encode(),
                      out_checkpoint: weights.getvalue()})
    return out_config, out_checkpoint
