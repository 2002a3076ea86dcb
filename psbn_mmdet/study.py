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
import math
import multiprocessing
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .collapse import collapsed_gamma, dead_activation
from .controller import PostShiftController
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
        self.backbone.init_weights()
        self.head = nn.Linear(base_channels * 4, num_classes)

    def forward(self, x):
        features = self.backbone(x)[-1]
        return self.head(features.mean(dim=(2, 3)))


#: network name -> input size (pixels per side)
INPUT_SIZE = {'basicnet': 16, 'resnet18': 32}


def build_network(network: str, variant: 'Variant') -> nn.Module:
    if network == 'basicnet':
        model = BasicNet()
        return to_psbn(model, **variant.options) if variant.psbn else model
    if network == 'resnet18':
        norm_cfg = (dict(type='psBN', requires_grad=True, **variant.options)
                    if variant.psbn else dict(type='BN', requires_grad=True))
        return ResNetClassifier(norm_cfg)
    raise ValueError(f'unknown network {network!r}')


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
@dataclass(frozen=True)
class Variant:
    """A norm layer and its recovery rule; empty options mean the defaults."""
    label: str
    psbn: bool
    options: dict = field(default_factory=dict)  # psBN layer options
    optimizer_reset: str | None = None  # None: the controller's default

    def controller_kwargs(self) -> dict:
        if self.optimizer_reset is None:
            return {}
        return dict(optimizer_reset=self.optimizer_reset)


VARIANTS = {
    'bn': Variant('BN', False),
    'psbn': Variant('psBN (defaults)', True),
    'reset_zero': Variant("psBN, optimizer_reset='zero'", True,
                          optimizer_reset='zero'),
    'reset_none': Variant("psBN, optimizer_reset='none'", True,
                          optimizer_reset='none'),
    'floor_abs': Variant('psBN, gamma_min=0.05', True, dict(gamma_min=0.05)),
    'window_20': Variant('psBN, window=20', True, dict(window=20)),
    'window_300': Variant('psBN, window=300', True, dict(window=300)),
    'rho_05': Variant('psBN, active_fraction=0.05', True,
                      dict(active_fraction=0.05)),
    'rho_16': Variant('psBN, active_fraction=0.16', True,
                      dict(active_fraction=0.16)),
}


# ------------------------------------------------------------------ runs
@dataclass(frozen=True)
class Job:
    network: str
    regime: str
    variant: str
    seed: int
    epochs: int = 15
    batch_size: int = 40


def _pre_relu_max(model: nn.Module, names: list[str], images: torch.Tensor,
                  batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Per-channel maximum of each pre-ReLU BN's output over ``images``."""
    modules = dict(model.named_modules())
    maxima: dict[str, torch.Tensor] = {}

    def hook_for(name):
        def hook(module, inputs, output):
            batch_max = output.detach().amax(dim=(0, 2, 3))
            old = maxima.get(name)
            maxima[name] = batch_max if old is None else torch.maximum(
                old, batch_max)
        return hook

    handles = [modules[n].register_forward_hook(hook_for(n)) for n in names]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                model(images[start:start + batch_size])
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return maxima


def collapse_counts(model: nn.Module, pre_relu: list[str],
                    images: torch.Tensor) -> dict[str, int]:
    """Dead pre-ReLU channels over ``images`` and BN channels with |γ| < 1e-3."""
    maxima = _pre_relu_max(model, pre_relu, images)
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    return dict(
        dead=sum(int(dead_activation(m).sum()) for m in maxima.values()),
        pre_relu=sum(m.numel() for m in maxima.values()),
        small_gamma=sum(int(collapsed_gamma(bn.weight).sum()) for bn in bns),
        channels=sum(bn.num_features for bn in bns))


def accuracy(model: nn.Module, images, labels, batch_size: int = 256) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(
            int((model(images[i:i + batch_size]).argmax(1)
                 == labels[i:i + batch_size]).sum())
            for i in range(0, len(images), batch_size))
    model.train()
    return correct / len(labels)


def run(job: Job) -> dict:
    """Train one network; return final metrics and per-epoch curves."""
    started = time.perf_counter()
    data = load_digits(INPUT_SIZE[job.network])
    variant, regime = VARIANTS[job.variant], REGIMES[job.regime]
    torch.manual_seed(job.seed)
    model = build_network(job.network, variant)
    optimizer = build_optimizer(model, regime)
    controller = PostShiftController(model, optimizer, shift=variant.psbn,
                                     **variant.controller_kwargs())
    order = torch.Generator().manual_seed(job.seed)
    curve = [collapse_counts(model, controller.pre_relu, data.train_x)]
    model.train()
    for _ in range(job.epochs):
        permutation = torch.randperm(len(data.train_y), generator=order)
        for start in range(0, len(permutation), job.batch_size):
            batch = permutation[start:start + job.batch_size]
            loss = nn.functional.cross_entropy(model(data.train_x[batch]),
                                               data.train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            controller.step()
        curve.append(collapse_counts(model, controller.pre_relu,
                                     data.train_x))
    controller.close()
    final = curve[-1]
    shifts = sum(int(c.sum()) for c in controller.shift_counts.values())
    return dict(
        job=asdict(job),
        dead_pct=100.0 * final['dead'] / final['pre_relu'],
        small_gamma_pct=100.0 * final['small_gamma'] / final['channels'],
        dead_last_window_pct=100.0 * sum(controller.dead_by_stage().values())
        / final['pre_relu'],
        test_acc=100.0 * accuracy(model, data.test_x, data.test_y),
        shifts=shifts,
        recollapses=controller.recollapses,
        steps_to_recollapse=(controller.steps_to_recollapse_sum /
                             controller.recollapses
                             if controller.recollapses else math.nan),
        steps=controller.steps,
        dead_curve=[100.0 * c['dead'] / c['pre_relu'] for c in curve],
        small_gamma_curve=[100.0 * c['small_gamma'] / c['channels']
                           for c in curve],
        seconds=time.perf_counter() - started)
