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
* **norm variants** (:data:`VARIANTS`): BN; psBN as shipped; the rule before
  this study (:class:`AssumedUnitXhatStatistics`: std(x̂) taken as 1 under
  batch statistics, which leaves channels with a decayed filter dead); exact
  x̂ statistics of the last batch ("fix", what the layer now ships) or of the
  whole window (:class:`WindowMeanXhatStatistics`); and on top of the fix one
  recovery rule changed at a time.

A run trains with a :class:`~psbn_mmdet.controller.PostShiftController` (only
monitoring for BN) stepped after every optimizer step.  It measures, in eval
mode over the whole training set, the percentage of *dead* pre-ReLU channels
(maximum post-ReLU activation < 1e-12, Mehta's activation criterion) every few
epochs, and at the end also in train mode, with |γ| < 1e-3, test accuracy and
the controller's shift / re-collapse counters.  :func:`run_jobs` spreads runs
over worker processes of one thread each; the networks run channels-last,
the faster layout for CPU convolutions.  ``tools/collapse_study.py`` is the
command line; ``docs/collapse_study.md`` holds the results.
"""
from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field

import numpy as np
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
    statistics_class = XHAT_STATISTICS[variant.xhat]
    if statistics_class is not None:
        for module in model.modules():
            if isinstance(module, PSBN_TYPES):
                module.window_stats = statistics_class(module.window)
    # channels-last: on CPU mkldnn's convolutions and max-pools run the
    # training step ~20% faster than in NCHW (docs/collapse_study.md)
    return model.to(memory_format=torch.channels_last)


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
class AssumedUnitXhatStatistics(WindowStatistics):
    """The rule before this study: x̂ taken as mean 0, std 1 under batch
    statistics.  BN's x̂ = (x − μ_B) / sqrt(σ²_B + eps) has second moment
    σ²_B / (σ²_B + eps): ≈ 0 for a channel whose conv filter has decayed (as
    under Adam + L2), where a shift computed with s = 1 leaves it dead."""

    @torch.no_grad()
    def update(self, bn: _BatchNorm, x: torch.Tensor, y: torch.Tensor) -> None:
        super().update(bn, x, y)
        if bn.training or bn.running_mean is None:
            self.xhat_mean = torch.zeros_like(self.xhat_mean)
            self.xhat_var = torch.ones_like(self.xhat_var)


class WindowMeanXhatStatistics(WindowStatistics):
    """Exact x̂ moments averaged over the window instead of its last batch.

    The filter of a dying channel keeps decaying during the window, so the
    window's average overstates the spread of x̂ at its end.
    """

    def reset(self) -> None:
        super().reset()
        self.sums = None

    def wants_moments(self) -> bool:
        return True  # every batch of the window

    @torch.no_grad()
    def update(self, bn: _BatchNorm, x: torch.Tensor, y: torch.Tensor) -> None:
        super().update(bn, x, y)
        moments = torch.stack(
            [self.xhat_mean, self.xhat_var + self.xhat_mean.square()])
        self.sums = moments if self.sums is None else self.sums + moments

    def xhat_mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean, sqmean = self.sums / self.batches
        return mean, (sqmean - mean.square()).clamp(min=0.0).sqrt()


#: how a psBN variant estimates x̂'s mean and std for the shift
XHAT_STATISTICS = {
    'shipped': None,  # psbn_mmdet.norm.WindowStatistics: exact, last batch
    'assumed-unit': AssumedUnitXhatStatistics,
    'exact-window': WindowMeanXhatStatistics,
    'exact-last': None,  # what the layer now ships
}


@dataclass(frozen=True)
class Variant:
    """A norm layer and its recovery rule; empty options mean the defaults."""
    label: str
    psbn: bool
    options: dict = field(default_factory=dict)  # psBN layer options
    optimizer_reset: str | None = None  # None: the controller's default
    xhat: str = 'shipped'  # a key of XHAT_STATISTICS

    def controller_kwargs(self) -> dict:
        if self.optimizer_reset is None:
            return {}
        return dict(optimizer_reset=self.optimizer_reset)


def _fixed(label: str, optimizer_reset: str = 'healthy',
           **kwargs) -> Variant:
    """psBN with the last-batch x̂ fix and one more change.  The reset rule
    stays 'healthy', the controller's default when these were measured."""
    return Variant(label, True, xhat='exact-last',
                   optimizer_reset=optimizer_reset, **kwargs)


VARIANTS = {
    'bn': Variant('BN', False),
    # the rule before this study: measured as "psBN (defaults)" then
    'psbn': Variant('psBN, x̂ std assumed 1, healthy reset (before the study)',
                    True, xhat='assumed-unit', optimizer_reset='healthy'),
    'shipped': Variant(
        "psBN (defaults: last-batch x̂, optimizer_reset='none')", True),
    'fix_window_mean': Variant('psBN, exact x̂ std, window mean', True,
                               xhat='exact-window',
                               optimizer_reset='healthy'),
    'fix': _fixed('psBN, exact x̂ std, last batch ("fix")'),
    'fix_reset_zero': _fixed("fix + optimizer_reset='zero'",
                             optimizer_reset='zero'),
    'fix_reset_none': _fixed("fix + optimizer_reset='none'",
                             optimizer_reset='none'),
    'fix_floor_abs': _fixed('fix + gamma_min=0.05', options=dict(
        gamma_min=0.05)),
    'fix_window_20': _fixed('fix + window=20', options=dict(window=20)),
    'fix_window_300': _fixed('fix + window=300', options=dict(window=300)),
    'fix_rho_05': _fixed('fix + active_fraction=0.05', options=dict(
        active_fraction=0.05)),
    'fix_rho_16': _fixed('fix + active_fraction=0.16', options=dict(
        active_fraction=0.16)),
    # the single changes that helped most, combined
    'fix_w20_none': _fixed("fix + window=20 + optimizer_reset='none'",
                           options=dict(window=20), optimizer_reset='none'),
    'fix_w20_none_rho16': _fixed(
        "fix + window=20 + optimizer_reset='none' + active_fraction=0.16",
        options=dict(window=20, active_fraction=0.16),
        optimizer_reset='none'),
}


# ------------------------------------------------------------------ runs
@dataclass(frozen=True)
class Job:
    """One training run: a cell of the grid and a seed."""
    network: str
    regime: str
    variant: str
    seed: int
    epochs: int = 15
    batch_size: int = 40

    @property
    def cell(self) -> tuple[str, str, str]:
        return (self.network, self.regime, self.variant)


@contextlib.contextmanager
def _evaluating(model: nn.Module, batch_statistics: bool):
    """No-grad evaluation; ``batch_statistics``: BN normalizes with the
    batch's statistics, as in training (else eval mode).  Mode and BN running
    statistics are restored afterwards, so evaluating never changes a run."""
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    was_training = model.training
    model.train(batch_statistics)
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(buffers[name])


def _pre_relu_max(model: nn.Module, names: list[str], images: torch.Tensor,
                  train_mode: bool, batch_size: int) -> list[torch.Tensor]:
    """Per-channel maximum of each pre-ReLU BN's output over ``images``
    (``train_mode``: under batch statistics, see :func:`_evaluating`)."""
    modules = dict(model.named_modules())
    maxima: dict[str, torch.Tensor] = {}

    def hook_for(name):
        def hook(module, inputs, output):
            # every dim but the channels': (N, C, H, W) or (N, C)
            dims = (0, ) + tuple(range(2, output.dim()))
            batch_max = output.detach().amax(dim=dims)
            old = maxima.get(name)
            maxima[name] = batch_max if old is None else torch.maximum(
                old, batch_max)
        return hook

    handles = [modules[n].register_forward_hook(hook_for(n)) for n in names]
    try:
        with _evaluating(model, train_mode):
            for start in range(0, len(images), batch_size):
                model(images[start:start + batch_size])
    finally:
        for handle in handles:
            handle.remove()
    return [maxima[n] for n in names]


def _percent_dead(maxima: list[torch.Tensor]) -> float:
    dead = sum(int(dead_activation(m).sum()) for m in maxima)
    return 100.0 * dead / sum(m.numel() for m in maxima)


def dead_percent(model: nn.Module, pre_relu: list[str], images: torch.Tensor,
                 train_mode: bool = False, batch_size: int = 256) -> float:
    """% of pre-ReLU channels whose max post-ReLU activation is < 1e-12."""
    return _percent_dead(
        _pre_relu_max(model, pre_relu, images, train_mode, batch_size))


def head_pre_relu(model: nn.Module) -> list[str]:
    """Names of the Linear layers that feed a ReLU without a BN between
    (BasicNet's FC head): units psBN does not manage."""
    if not isinstance(model, nn.Sequential):
        return []
    children = list(model.named_children())
    return [name for (name, module), (_, after) in zip(children, children[1:])
            if isinstance(module, nn.Linear) and isinstance(after, nn.ReLU)]


def small_gamma_percent(model: nn.Module) -> float:
    """% of BN channels (every BN) with |γ| < 1e-3."""
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    small = sum(int(collapsed_gamma(bn.weight).sum()) for bn in bns)
    return 100.0 * small / sum(bn.num_features for bn in bns)


def accuracy(model: nn.Module, images, labels, batch_size: int = 256,
             train_mode: bool = False) -> float:
    """% correct; ``train_mode``: under batch statistics of ``batch_size``
    images, which tells a network that trained badly from one whose BN
    running statistics are off."""
    with _evaluating(model, train_mode):
        correct = sum(
            int((model(images[i:i + batch_size]).argmax(1)
                 == labels[i:i + batch_size]).sum())
            for i in range(0, len(images), batch_size))
    return 100.0 * correct / len(labels)


#: fraction of the epochs trained at lr / 10 at the end (Mehta: 75 of 325)
LR_DROP_FRACTION = 0.2
#: epochs between two points of the eval-mode dead curve
CURVE_EVERY = 3


class ShiftProbe:
    """How active just-shifted channels are on the next training batch.

    Records, for every channel the controller shifted, the fraction of its
    elements with y > 0 in the first training forward pass after the shift:
    ≈ ``active_fraction`` when the shift works, 0 when the channel stays dead.
    """

    def __init__(self, controller: PostShiftController) -> None:
        self.controller = controller
        self.before: dict[str, torch.Tensor] = {}
        self.pending: dict[str, torch.Tensor] = {}
        self.fractions: list[float] = []
        self.handles = [
            controller.bns[name].register_forward_hook(self._hook(name))
            for name in controller.pre_relu
            if isinstance(controller.bns[name], PSBN_TYPES)
        ]

    def _hook(self, name: str):
        def hook(module, inputs, output):
            mask = self.pending.pop(name, None)
            if mask is not None and module.training:
                active = (output.detach().transpose(0, 1)[mask] > 0)
                self.fractions += active.flatten(1).float().mean(1).tolist()
        return hook

    def before_step(self) -> None:
        self.before = {k: v.clone()
                       for k, v in self.controller.shift_counts.items()}

    def after_step(self) -> None:
        for name, counts in self.controller.shift_counts.items():
            old = self.before.get(name)
            shifted = counts > (0 if old is None else old)
            if shifted.any():
                self.pending[name] = shifted

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def run(job: Job) -> dict:
    """Train one network; return final metrics and curves.

    Metrics: ``dead_pct`` (Mehta's criterion in eval mode over the training
    set, at the end), ``dead_train_pct`` (same, BN in train mode, batches of
    the training size: what the controller sees), ``small_gamma_pct``,
    ``head_dead_pct`` (the same criterion for the FC head's ReLU units, which
    have no BN; None without such a head),
    ``test_acc`` (eval mode) and ``test_acc_batch_stats`` (BN in train mode,
    batches of the training size), the controller's shift and re-collapse
    counters, ``active_after_shift_pct`` (:class:`ShiftProbe`).  Curves:
    ``dead_curve`` (``[epoch, dead %]``, eval mode, every ``CURVE_EVERY``
    epochs from 0), ``window_curve`` (``[step, % pre-ReLU channels dead in
    the window]`` at each window end) and ``loss_curve`` (``[epoch, mean
    training loss]``).
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    data = load_digits(INPUT_SIZE[job.network])
    variant, regime = VARIANTS[job.variant], REGIMES[job.regime]
    torch.manual_seed(job.seed)
    model = build_network(job.network, variant)
    optimizer = build_optimizer(model, regime)
    controller = PostShiftController(model, optimizer, shift=variant.psbn,
                                     **variant.controller_kwargs())
    pre_relu = controller.pre_relu
    channels = sum(controller.bns[n].num_features for n in pre_relu)
    order = torch.Generator().manual_seed(job.seed)
    drop_at = job.epochs - round(LR_DROP_FRACTION * job.epochs)
    probe = ShiftProbe(controller)
    head = head_pre_relu(model)

    def dead_now() -> tuple[float, float | None]:
        """Eval-mode dead % of the BN channels and of the FC head's units,
        over the training set, in one pass."""
        maxima = _pre_relu_max(model, pre_relu + head, data.train_x,
                               train_mode=False, batch_size=256)
        return (_percent_dead(maxima[:len(pre_relu)]),
                _percent_dead(maxima[len(pre_relu):]) if head else None)

    dead, head_dead = dead_now()
    dead_curve = [[0, dead]]
    window_curve, loss_curve = [], []
    model.train()
    for epoch in range(job.epochs):
        if epoch == drop_at:
            for group in optimizer.param_groups:
                group['lr'] = regime.lr / 10
        permutation = torch.randperm(len(data.train_y), generator=order)
        losses = []
        for start in range(0, len(permutation), job.batch_size):
            batch = permutation[start:start + job.batch_size]
            loss = nn.functional.cross_entropy(model(data.train_x[batch]),
                                               data.train_y[batch])
            losses.append(loss.item())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            probe.before_step()
            result = controller.step()
            probe.after_step()
            if result is not None:
                window_dead = sum(result.dead.values())
                window_curve.append(
                    [result.step, 100.0 * window_dead / channels])
        loss_curve.append([epoch + 1, statistics.fmean(losses)])
        if (epoch + 1) % CURVE_EVERY == 0 or epoch + 1 == job.epochs:
            dead, head_dead = dead_now()
            dead_curve.append([epoch + 1, dead])
    controller.close()
    probe.close()
    shifts = sum(int(c.sum()) for c in controller.shift_counts.values())
    return dict(
        job=asdict(job),
        dead_pct=dead_curve[-1][1],
        head_dead_pct=head_dead,
        dead_train_pct=dead_percent(model, pre_relu, data.train_x,
                                    train_mode=True,
                                    batch_size=job.batch_size),
        small_gamma_pct=small_gamma_percent(model),
        test_acc=accuracy(model, data.test_x, data.test_y),
        test_acc_batch_stats=accuracy(model, data.test_x, data.test_y,
                                      batch_size=job.batch_size,
                                      train_mode=True),
        shifts=shifts,
        active_after_shift_pct=(100.0 * statistics.fmean(probe.fractions)
                                if probe.fractions else None),
        recollapses=controller.recollapses,
        steps_to_recollapse=(controller.steps_to_recollapse_sum /
                             controller.recollapses
                             if controller.recollapses else None),
        steps=controller.steps,
        pre_relu_channels=channels,
        dead_curve=dead_curve,
        window_curve=window_curve,
        loss_curve=loss_curve,
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu_started)


# ------------------------------------------------------------------ grid
#: variants of every regime.  Older rules only where channels die: a rule
#: acts on dead channels only, and until its first shift a psBN run is
#: bit-identical to BN's, so where BN never has a dead channel (AdamW, SGD
#: at an ordinary lr) every rule reproduces BN; the defaults show it.
MAIN_VARIANTS = {
    'adam_l2': ('bn', 'shipped', 'psbn', 'fix'),
    'adamw': ('bn', 'shipped'),
    'sgd_high': ('bn', 'shipped', 'psbn', 'fix'),
    'sgd': ('bn', 'shipped'),
}
#: recovery candidates (BasicNet only), each one change from 'fix'
CANDIDATES = {
    # 'fix_reset_none' is the shipped rule: measured as 'shipped' above
    'adam_l2': ('fix_window_mean', 'fix_reset_zero', 'fix_floor_abs',
                'fix_window_20', 'fix_window_300', 'fix_rho_05', 'fix_rho_16'),
    # SGD has no second moments: 'healthy' and 'zero' resets coincide
    'sgd_high': ('fix_floor_abs', 'fix_window_20'),
}
#: combinations of the best single changes, in the regimes where channels die
COMBINATIONS = {
    'basicnet': ('fix_w20_none', 'fix_w20_none_rho16'),
    'resnet18': ('fix_w20_none', 'fix_w20_none_rho16'),
}
NETWORKS = ('basicnet', 'resnet18')
QUICK_VARIANTS = ('bn', 'shipped', 'psbn')


def full_grid(seeds: int = 3, epochs: int = 15) -> list[Job]:
    cells = [(network, regime, variant) for network in NETWORKS
             for regime, variants in MAIN_VARIANTS.items()
             for variant in variants]
    cells += [('basicnet', regime, variant)
              for regime, variants in CANDIDATES.items()
              for variant in variants]
    cells += [(network, regime, variant)
              for network, variants in COMBINATIONS.items()
              for regime in CANDIDATES for variant in variants]
    return [Job(*cell, seed=seed, epochs=epochs) for cell in cells
            for seed in range(seeds)]


def quick_grid(seeds: int = 2, epochs: int = 15) -> list[Job]:
    """BasicNet, Adam + L2, BN vs psBN (shipped and fixed statistics)."""
    return [Job('basicnet', 'adam_l2', variant, seed, epochs)
            for variant in QUICK_VARIANTS for seed in range(seeds)]


def _init_worker() -> None:
    torch.set_num_threads(1)


def run_jobs(jobs: list[Job], processes: int = 1, log=None) -> list[dict]:
    """Run ``jobs`` in ``processes`` worker processes (1: in this process).

    Results come back in the order of ``jobs``.  ``log(str)`` gets a line per
    finished run.
    """
    done = 0

    def report(result):
        nonlocal done
        done += 1
        if log is not None:
            j = result['job']
            log(f'[{done}/{len(jobs)}] {j["network"]} {j["regime"]} '
                f'{j["variant"]} seed {j["seed"]}: dead '
                f'{result["dead_pct"]:.1f}% acc {result["test_acc"]:.1f}% '
                f'({result["seconds"]:.0f}s)')
        return result

    if processes <= 1:
        return [report(run(job)) for job in jobs]
    # the BasicNet runs are the long ones: start them first.  A process pool
    # of concurrent.futures fails loudly if a worker dies (multiprocessing's
    # Pool would wait forever for the lost run).
    order = sorted(range(len(jobs)),
                   key=lambda i: jobs[i].network != 'basicnet')
    results: list[dict | None] = [None] * len(jobs)
    with ProcessPoolExecutor(
            processes, mp_context=multiprocessing.get_context('spawn'),
            initializer=_init_worker) as pool:
        futures = {pool.submit(run, jobs[i]): i for i in order}
        for future in as_completed(futures):
            results[futures[future]] = report(future.result())
    return results


# ---------------------------------------------------------- aggregation
METRICS = ('dead_pct', 'dead_train_pct', 'last_window_dead_pct',
           'small_gamma_pct', 'test_acc', 'final_loss', 'head_dead_pct',
           'shifts', 'active_after_shift_pct', 'recollapses')


def last_window_dead(result: dict) -> float | None:
    """Dead % the controller found in the last detection window, before the
    shift at its end (a shift at the very last step would hide those channels
    from the end-of-training measurements)."""
    curve = result['window_curve']
    return curve[-1][1] if curve else None


def _mean_std(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(results: list[dict]) -> list[dict]:
    """Mean and std over seeds per cell; cells ordered by network, regime and
    variant as declared above."""
    cells: dict[tuple, list[dict]] = {}
    for result in results:
        job = result['job']
        key = (job['network'], job['regime'], job['variant'])
        cells.setdefault(key, []).append(result)
    order = (list(NETWORKS), list(REGIMES), list(VARIANTS))
    rows = []
    for network, regime, variant in sorted(cells, key=lambda key: tuple(
            names.index(name) for names, name in zip(order, key))):
        runs = cells[(network, regime, variant)]
        row = dict(network=network, regime=regime, variant=variant,
                   seeds=len(runs))
        for run in runs:
            run.setdefault('last_window_dead_pct', last_window_dead(run))
            run.setdefault('final_loss', run['loss_curve'][-1][1]
                           if run.get('loss_curve') else None)
        for metric in METRICS:  # records of older code lack some metrics
            row[metric] = _mean_std([r[metric] for r in runs
                                     if r.get(metric) is not None])
        row['last_window_step'] = max(
            (r['window_curve'][-1][0] for r in runs if r['window_curve']),
            default=None)
        # steps to re-collapse pooled over seeds: Σ steps / Σ re-collapses
        recollapses = sum(r['recollapses'] for r in runs)
        row['steps_to_recollapse'] = (sum(
            r['steps_to_recollapse'] * r['recollapses'] for r in runs
            if r['recollapses']) / recollapses if recollapses else None)
        rows.append(row)
    return rows


# -------------------------------------------------------------- reports
def _fmt(pair: tuple[float, float] | None, digits: int = 1) -> str:
    if pair is None:
        return '–'
    mean, std = pair
    return f'{mean:.{digits}f} ± {std:.{digits}f}'


TABLE_HEADER = ('| network | regime | norm | dead % (end) '
                '| dead % (last window, step) | \\|γ\\| < 1e-3 % '
                '| test acc. % | train loss (last epoch) | FC head dead % '
                '| shifts | active after shift % '
                '| re-collapses | steps to re-collapse |\n'
                '|---|---|---|---|---|---|---|---|---|---|---|---|---|')


def markdown_table(rows: list[dict]) -> str:
    lines = [TABLE_HEADER]
    for row in rows:
        steps = row['steps_to_recollapse']
        lines.append(
            f"| {row['network']} | {REGIMES[row['regime']].label} "
            f"| {VARIANTS[row['variant']].label} "
            f"| {_fmt(row['dead_pct'])} "
            f"| {_fmt(row['last_window_dead_pct'])} "
            f"({row['last_window_step']}) "
            f"| {_fmt(row['small_gamma_pct'])} | {_fmt(row['test_acc'])} "
            f"| {_fmt(row['final_loss'], 2)} | {_fmt(row['head_dead_pct'])} "
            f"| {_fmt(row['shifts'], 0)} "
            f"| {_fmt(row['active_after_shift_pct'], 2)} "
            f"| {_fmt(row['recollapses'], 0)} "
            f"| {'–' if steps is None else f'{steps:.0f}'} |")
    return '\n'.join(lines)


def setup_description() -> str:
    """The fixed set-up of every run, from the constants above."""
    lines = ['| regime | optimizer | lr | weight decay | momentum |',
             '|---|---|---|---|---|']
    for regime in REGIMES.values():
        decay = ('L2 (in the gradient)' if regime.optimizer == 'adam' else
                 'decoupled' if regime.optimizer == 'adamw' else 'L2')
        lines.append(f'| {regime.label} | {regime.optimizer} | {regime.lr:g} '
                     f'| {regime.weight_decay:g} {decay} '
                     f'| {regime.momentum:g} |')
    lines += ['', '| norm | psBN options | optimizer_reset | x̂ statistics |',
              '|---|---|---|---|']
    for variant in VARIANTS.values():
        if not variant.psbn:
            continue
        options = ', '.join(f'{k}={v}' for k, v in variant.options.items())
        lines.append(
            f'| {variant.label} | {options or "defaults"} '
            f'| {variant.optimizer_reset or "default"} '
            f'| {variant.xhat} |')
    return '\n'.join(lines)


def plot_curves(results: list[dict], network: str, regimes, variants,
                title: str) -> bytes:
    """PNG, one column per regime: dead % over training in eval mode over the
    training set (mean ± std over seeds), and in the controller's train-mode
    detection windows (mean over seeds)."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    regimes = list(regimes)
    palette = colormaps['tab10' if len(variants) <= 10 else 'tab20'].colors
    columns = 3 if len(variants) <= 6 else 2
    legend_rows = math.ceil(len(variants) / columns)
    figure = Figure(figsize=(max(4.2 * len(regimes), 11.0),
                             6.4 + 0.25 * legend_rows))
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, len(regimes), squeeze=False)
    for column, regime in enumerate(regimes):
        top, bottom = axes[0][column], axes[1][column]
        for index, variant in enumerate(variants):
            runs = [r for r in results if r['job']['network'] == network
                    and r['job']['regime'] == regime
                    and r['job']['variant'] == variant]
            if not runs:
                continue
            label = VARIANTS[variant].label
            curves = np.array([r['dead_curve'] for r in runs])
            epochs = curves[0, :, 0]
            mean, std = curves[:, :, 1].mean(0), curves[:, :, 1].std(0)
            line, = top.plot(epochs, mean, label=label,
                             color=palette[index % len(palette)])
            top.fill_between(epochs, mean - std, mean + std, alpha=0.2,
                             color=line.get_color())
            windows = [np.array(r['window_curve']) for r in runs
                       if r['window_curve']]
            if windows and all(len(w) == len(windows[0]) for w in windows):
                steps = windows[0][:, 0]
                values = np.stack([w[:, 1] for w in windows])
                bottom.plot(steps, values.mean(0), marker='.',
                            color=line.get_color(), label=label)
        top.set_title(f'{network}, {REGIMES[regime].label}')
        top.set_xlabel('epoch')
        top.set_ylabel('dead % (eval mode, training set)')
        bottom.set_xlabel('step')
        bottom.set_ylabel('dead % in detection window (train mode)')
        top.grid(alpha=0.3)
        bottom.grid(alpha=0.3)
    legend = {}
    for axis in axes[0]:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    figure.legend(legend.values(), legend.keys(), loc='lower center',
                  ncol=columns, fontsize=8)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.035 * legend_rows, 1, 1))
    buffer = io.BytesIO()
    figure.savefig(buffer, format='png', dpi=90)
    return buffer.getvalue()


def figures(results: list[dict]) -> dict[str, bytes]:
    """``{file name: PNG}`` for the runs present in ``results``."""
    present = {(r['job']['network'], r['job']['regime']) for r in results}
    pngs = {}
    for network in NETWORKS:
        regimes = [r for r in REGIMES if (network, r) in present]
        if regimes:
            pngs[f'dead_{network}.png'] = plot_curves(
                results, network, regimes, ('bn', 'shipped', 'psbn',
                                            'fix_w20_none_rho16'),
                f'{network}: dead pre-ReLU channels over training, BN vs '
                'psBN (mean ± std over seeds)')
    for regime, candidates in CANDIDATES.items():
        variants = (('bn', 'shipped', 'psbn', 'fix') + candidates
                    + COMBINATIONS['basicnet'])
        if any(r['job']['network'] == 'basicnet'
               and r['job']['regime'] == regime
               and r['job']['variant'] in candidates for r in results):
            pngs[f'candidates_basicnet_{regime}.png'] = plot_curves(
                results, 'basicnet', [regime], variants,
                f'basicnet, {REGIMES[regime].label}: recovery candidates')
    return pngs
