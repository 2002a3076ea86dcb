"""Models from mmdet configs: the one place that builds them and loads weights.

mmdet's registries are filled by ``register_all_modules`` (imported here, on
first use: reading a checkpoint never pays for mmdet).  Nothing is
initialized from the network (``init_weights`` is not called): the weights
come from a checkpoint.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..utils.config import load_config
from ..utils.errors import UserError, one_line
from .checkpoint import Checkpoint, check_state_dict


def mmdet_registries():
    """mmdet's ``DATASETS`` and ``MODELS``, every mmdet module registered
    (mmdet is the default scope from here on)."""
    from mmdet.registry import DATASETS, MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    return DATASETS, MODELS


def build_model(model_cfg, what: str = 'the model of the config'
                ) -> nn.Module:
    """``MODELS.build(model_cfg)`` in mmdet's scope.

    Raises:
        UserError: the config's model cannot be built, naming ``what``.
    """
    _, models = mmdet_registries()
    try:
        return models.build(model_cfg)
    except Exception as error:  # noqa: BLE001 - the config's model is bad
        raise UserError(f'cannot build {what}: '
                        f'{one_line(error, with_type=False)}') from None


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor],
                 what: str, prefix: str = '') -> nn.Module:
    """``state`` loaded strictly into ``model``, which is put in eval mode.

    Raises:
        UserError: ``state`` does not load strictly (``what`` and the first
            offending key, ``prefix`` in front, named).
    """
    check_state_dict(model.state_dict(), state, what, prefix=prefix)
    model.load_state_dict(state, strict=True)
    model.eval()  # mmdet's ResNet.train() returns None: not chained
    return model


def load_detector(cfg, state: Mapping[str, torch.Tensor],
                  what: str) -> nn.Module:
    """The config's detector (``cfg.model``) with ``state`` loaded."""
    return load_weights(build_model(cfg.model), state, what)


def load_backbone(config, checkpoint: Checkpoint) -> nn.Module:
    """``model.backbone`` of the config file ``config`` with the
    checkpoint's backbone loaded strictly (a torchvision classifier's
    ``fc`` is left out)."""
    cfg = load_config(config)
    backbone_cfg = cfg.get('model', {}).get('backbone')
    if backbone_cfg is None:
        raise UserError(f'{config}: no model.backbone in it')
    backbone = build_model(backbone_cfg, f'model.backbone of {config}')
    expected = backbone.state_dict()
    state = {k: v for k, v in checkpoint.backbone_state().items()
             if k in expected or not k.startswith('fc.')}
    return load_weights(backbone, state,
                        f'the backbone of {config} does not match '
                        f'{checkpoint.path}', checkpoint.backbone_prefix)
