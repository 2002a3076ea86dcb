"""Collapse study: BN vs psBN on a real (tiny) image data set, on CPU.

Reproduces, at CPU scale, the filter collapse that Mehta et al. (2019) and
Zhou et al. (2020) describe, and measures what psBN and each candidate rule of
its recovery change:

* **data**: scikit-learn's digits (1797 8×8 grey images of 10 digits, shipped
  inside the package), upsampled, split 80/20 stratified with a fixed seed;
* **networks**: a compact *BasicNet* (six conv-BN-ReLU layers, two max-pools, a
  two-layer FC head, in the spirit of Mehta et al.), turned into psBN with
  :func:`~psbn_mmdet.surgery.to_psbn`; and a small ResNet-18 built by mmdet's
  ``ResNet`` with ``norm_cfg=dict(type='psBN'|'BN')``, the plugin's real path;
* **regimes**: Adam + L2 (Mehta: strong sparsity), AdamW (decoupled decay),
  SGD + momentum at a high and at an ordinary learning rate (Zhou: the collapse
  probability grows like lr²);
* **norm variants** (:data:`VARIANTS`): BN, psBN with the package's defaults,
  and psBN with one recovery rule changed at a time.

A run trains with a :class:`~psbn_mmdet.controller.PostShiftController` (only
monitoring for BN) stepped after every optimizer step, and measures after each
epoch, in eval mode over the whole training set, the percentage of *dead*
pre-ReLU channels (maximum post-ReLU activation < 1e-12, Mehta's activation
criterion) and of BN channels with |γ| < 1e-3.  ``tools/collapse_study.py`` is
the command line; ``docs/collapse_study.md`` holds the results.
"""
from __future__ import annotations

import functools
import logging
import math
import multiprocessing
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from mmengine.logging import MMLogger

from .collapse import collapsed_gamma, dead_activation
from .controller import PostShiftController
from .norm import PSBN_TYPES, WindowStatistics
from .surgery import to_psbn

# ------------------------------------------------------------------ data
SPLIT_SEED = 0
TEST_FRACTION = 0.2


@dataclass
class Digits:
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


@functools.lru_cache(maxsize=2)
def load_digits(size: int) -> Digits:
    """scikit-learn's digits, upsampled to ``size``², standardized on train."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split
    data = sklearn_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1)
    images = nn.functional.interpolate(images, size=(size, size),
                                       mode='bilinear', align_corners=False)
    labels = torch.tensor(data.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        range(len(labels)), test_size=TEST_FRACTION, random_state=SPLIT_SEED,
        stratify=data.target)
    train_idx, test_idx = torch.tensor(train_idx), torch.tensor(test_idx)
    mean, std = images[train_idx].mean(), images[train_idx].std()
    images = (images - mean) / std
    return Digits(images[train_idx], labels[train_idx], images[test_idx],
                  labels[test_idx])


# -------------------------------------------------------------- networks
#: BasicNet's conv widths; 'M' is a 2×2 max-pool
BASICNET_LAYERS = (32, 64, 'M', 64, 128, 'M', 128, 128)


class BasicNet(nn.Sequential):
    """conv3×3-BN-ReLU stack with max-pools and a two-layer FC head."""

    def __init__(self, layers=BASICNET_LAYERS, in_channels: int = 1,
                 num_classes: int = 10, hidden: int = 64) -> None:
        modules, channels = [], in_channels
        for layer in layers:
            if layer == 'M':
                modules.append(nn.MaxPool2d(2))
                continue
            conv = nn.Conv2d(channels, layer, 3, padding=1, bias=False)
            nn.init.xavier_uniform_(conv.weight,
                                    gain=nn.init.calculate_gain('relu'))
            modules += [conv, nn.BatchNorm2d(layer), nn.ReLU(inplace=True)]
            channels = layer
        modules += [
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(channels, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes)
        ]
        super().__init__(*modules)


class ResNetClassifier(nn.Module):
    """mmdet's ResNet-18 (3 stages, narrow) with a global-pool linear head."""

    def __init__(self, norm_cfg: dict, base_channels: int = 16,
                 num_classes: int = 10) -> None:
        super().__init__()
        from mmdet.models.backbones import ResNet
        import psbn_mmdet  # noqa: F401  (registers psBN for build_norm_layer)
        self.backbone = ResNet(
            depth=18, in_channels=1, base_channels=base_channels,
            num_stages=3, strides=(1, 2, 2), dilations=(1, 1, 1),
            out_indices=(2, ), norm_cfg=norm_cfg, norm_eval=False,
            zero_init_residual=False)
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)  # init_weights logs every parameter
        try:
            self.backbone.init_weights()
        finally:
            logger.setLevel(level)
        self.head = nn.Linear(base_channels * 4, num_classes)

    def forward(self, x):
        features = self.backbone(x)[-1]
        return self.head(features.mean(dim=(2, 3)))


#: network name -> input size (pixels per side)
INPUT_SIZE = {'basicnet': 16, 'resnet18': 32}


def build_network(network: str, variant: 'Variant') -> nn.Module:
    if network == 'basicnet':
        model = BasicNet()
        if variant.psbn:
            model = to_psbn(model, **variant.options)
    elif network == 'resnet18':
        norm_cfg = (dict(type='psBN', requires_grad=True, **variant.options)
                    if variant.psbn else dict(type='BN', requires_grad=True))
        model = ResNetClassifier(norm_cfg)
    else:
        raise ValueError(f'unknown network {network!r}')
    if variant.measured_xhat:
        for module in model.modules():
            if isinstance(module, PSBN_TYPES):
                module.window_stats = MeasuredXhatStatistics()
    return model


# --------------------------------------------------------------- regimes
@dataclass(frozen=True)
class Regime:
    label: str
    optimizer: str  # 'adam' (L2 in the gradient), 'adamw' or 'sgd'
    lr: float
    weight_decay: float
    momentum: float = 0.0


REGIMES = {
    'adam_l2': Regime('Adam + L2', 'adam', 1e-2, 5e-3),
    'adamw': Regime('AdamW', 'adamw', 1e-2, 5e-2),
    'sgd_high': Regime('SGD+m, high lr', 'sgd', 0.5, 5e-4, 0.9),
    'sgd': Regime('SGD+m, ordinary lr', 'sgd', 0.05, 5e-4, 0.9),
}


def build_optimizer(model: nn.Module, regime: Regime):
    params = model.parameters()
    if regime.optimizer == 'adam':
        return torch.optim.Adam(params, lr=regime.lr,
                                weight_decay=regime.weight_decay)
    if regime.optimizer == 'adamw':
        return torch.optim.AdamW(params, lr=regime.lr,
                                 weight_decay=regime.weight_decay)
    return torch.optim.SGD(params, lr=regime.lr, momentum=regime.momentum,
                           weight_decay=regime.weight_decay)


# -------------------------------------------------------------- variants
class MeasuredXhatStatistics(WindowStatistics):
    """Window statistics whose shift uses the measured x̂ of the last batch.

    Two differences from :class:`~psbn_mmdet.norm.WindowStatistics`, which
    assumes mean 0 and std 1 under batch statistics and averages over the
    whole window:

    * in train mode BN computes ``x̂ = (x − μ_B) / sqrt(σ²_B + eps)``, whose
      second moment is ``σ²_B / (σ²_B + eps)``, not 1: ≈ 0 for a channel whose
      conv filter has decayed (σ²_B ≪ eps, as under Adam + L2), where a shift
      computed with s = 1 leaves the channel dead;
    * the filter keeps decaying during the window, so the window's average
      overstates the spread at the end of it: the last batch's is used.
    """

    def reset(self) -> None:
        super().reset()
        self.last_mean = self.last_sqmean = None

    @torch.no_grad()
    def update(self, bn: _BatchNorm, x: torch.Tensor, y: torch.Tensor) -> None:
        super().update(bn, x, y)
        dims = [0] + list(range(2, x.dim()))
        var, mean = torch.var_mean(x.detach().float(), dim=dims, correction=0)
        if bn.training or bn.running_mean is None:
            self.last_mean = torch.zeros_like(var)
            self.last_sqmean = var / (var + bn.eps)
        else:
            inv_std = torch.rsqrt(bn.running_var.float() + bn.eps)
            self.last_mean = (mean - bn.running_mean.float()) * inv_std
            self.last_sqmean = var * inv_std.square() + self.last_mean.square()

    def xhat_mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        var = (self.last_sqmean - self.last_mean.square()).clamp(min=0.0)
        return self.last_mean, var.sqrt()


@dataclass(frozen=True)
class Variant:
    """A norm layer and its recovery rule; empty options mean the defaults."""
    label: str
    psbn: bool
    options: dict = field(default_factory=dict)  # psBN layer options
    optimizer_reset: str | None = None  # None: the controller's default
    measured_xhat: bool = False  # use MeasuredXhatStatistics

    def controller_kwargs(self) -> dict:
        if self.optimizer_reset is None:
            return {}
        return dict(optimizer_reset=self.optimizer_reset)


VARIANTS = {
    'bn': Variant('BN', False),
    'psbn': Variant('psBN (defaults)', True),
    'fix': Variant('psBN + measured x̂ std', True, measured_xhat=True),
    'fix_reset_zero': Variant("+ fix, optimizer_reset='zero'", True,
                              optimizer_reset='zero', measured_xhat=True),
    'fix_reset_none': Variant("+ fix, optimizer_reset='none'", True,
                              optimizer_reset='none', measured_xhat=True),
    'fix_floor_abs': Variant('+ fix, gamma_min=0.05', True,
                             dict(gamma_min=0.05), measured_xhat=True),
    'fix_window_20': Variant('+ fix, window=20', True, dict(window=20),
                             measured_xhat=True),
    'fix_window_300': Variant('+ fix, window=300', True, dict(window=300),
                              measured_xhat=True),
    'fix_rho_05': Variant('+ fix, active_fraction=0.05', True,
                          dict(active_fraction=0.05), measured_xhat=True),
    'fix_rho_16': Variant('+ fix, active_fraction=0.16', True,
                          dict(active_fraction=0.16), measured_xhat=True),
}


