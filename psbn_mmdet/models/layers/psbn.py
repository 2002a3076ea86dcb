"""Post-shifted batch normalization (psBN): BN that can bring dead channels back.

The forward pass is exactly BatchNorm (same op, same parameters and buffers,
same state-dict keys).  On top of it, while gradients are enabled and the layer's
affine parameters train, the layer keeps cheap per-channel statistics over the
current *detection window*
(:class:`~psbn_mmdet.core.statistics.WindowStatistics`):

* the maximum of the BN output ``y`` over every element seen;
* the mean and variance of the normalized input ``x̂`` in the window's last
  batch (under batch statistics ``m = 0`` and ``s² = σ²/(σ² + eps)``; frozen
  running statistics, as in mmdet's ``norm_eval=True`` finetuning, give
  whatever the data measures).

A :class:`~psbn_mmdet.core.controller.PostShiftController` reads those statistics at the
end of each window, all-reduces them across ranks and calls :meth:`post_shift_`
on dead pre-ReLU channels.  The layer alone never changes its parameters.

None of the bookkeeping is in the state dict, so checkpoints are plain BN checkpoints
in both directions (BN -> psBN -> BN is lossless).
"""
from __future__ import annotations

import math
import warnings
import weakref
from statistics import NormalDist

import torch
import torch.distributed as dist
from mmengine.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...core.revival import DEFAULT_REVIVAL, check_revival
from ...core.statistics import (DEFAULT_WINDOW, WindowStatistics,
                                is_training_pass)

PSBN_OPTIONS = ('window', 'active_fraction', 'gamma_min', 'revival')
#: the warning below is said once per process
_WARNED = []


def _warn_unattached() -> None:
    if not _WARNED:
        _WARNED.append(True)
        warnings.warn('psBN layers are training without a post-shift '
                      'controller: they compute BN and recover nothing. Add '
                      "custom_hooks=[dict(type='PostShiftHook')] (mmengine) "
                      'or step a PostShiftController (PyTorch).',
                      stacklevel=3)


def _validate_options(cls_name: str, window, active_fraction, gamma_min,
                      revival, unknown: dict) -> None:
    """Raise a one-line error naming the first bad psBN option."""
    if unknown:
        known = ', '.join(PSBN_OPTIONS)
        raise TypeError(f'{cls_name}: unknown option {sorted(unknown)[0]!r} '
                        f'(psBN options are {known}, plus BatchNorm\'s own)')
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(
            f'{cls_name}: window must be an integer >= 1, got {window!r}')
    if (isinstance(active_fraction, bool)
            or not isinstance(active_fraction, (int, float))
            or not 0.0 < active_fraction <= 0.5):
        raise ValueError(f'{cls_name}: active_fraction must be in (0, 0.5], '
                         f'got {active_fraction!r}')
    if gamma_min is not None and (
            isinstance(gamma_min, bool)
            or not isinstance(gamma_min, (int, float))
            or not 0.0 < gamma_min < math.inf):
        raise ValueError(f'{cls_name}: gamma_min must be None (relative to the '
                         f'layer) or a positive number, got {gamma_min!r}')
    try:
        check_revival(revival)
    except ValueError as error:
        raise ValueError(f'{cls_name}: {error}') from None


class PostShiftMixin:
    """Statistics and the post-shift, shared by :class:`psBN` and :class:`psSyncBN`.

    The options are documented on :class:`psBN`; ``GAMMA_FLOOR_RATIO`` and
    ``GAMMA_FLOOR_FALLBACK`` define ``gamma_min=None``.
    """

    #: mmcv's ``build_norm_layer`` names layers from this: ``bn1``, ``bn2``, ...
    _abbr_ = 'bn'
    #: relative |γ| floor used when ``gamma_min`` is None
    GAMMA_FLOOR_RATIO = 0.1
    #: absolute floor when no channel of the layer is healthy
    GAMMA_FLOOR_FALLBACK = 1e-2

    def _init_post_shift(self, window: int, active_fraction: float,
                         gamma_min: float | None, revival: str) -> None:
        self.window = window
        self.active_fraction = float(active_fraction)
        self.gamma_min = None if gamma_min is None else float(gamma_min)
        self.revival = revival
        #: channels whose running statistics the next training pass sets
        #: (:meth:`recalibrate_`); None when there are none
        self.pending_recalibration: torch.Tensor | None = None
        # Not a buffer: checkpoints keep exactly BN's keys.
        self.window_stats = WindowStatistics(window)
        _remember(self)

    @property
    def options(self) -> dict:
        """The psBN options of this layer, as its constructor takes them."""
        return dict(window=self.window, active_fraction=self.active_fraction,
                    gamma_min=self.gamma_min, revival=self.revival)

    @property
    def collects_statistics(self) -> bool:
        """True when this forward pass belongs to training of this layer and
        someone reads the statistics."""
        return self.window_stats.enabled and is_training_pass(self)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f', window={self.window}, '
                f'active_fraction={self.active_fraction}, '
                f'gamma_min={self.gamma_min}, revival={self.revival!r}')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.pending_recalibration is not None
                and is_training_pass(self)):
            self._recalibrate(x)
        y = super().forward(x)
        if self.collects_statistics:
            self.window_stats.update(self, x, y)
        elif not self.window_stats.attached and is_training_pass(self):
            _warn_unattached()
        return y

    def dead_channels(self) -> torch.Tensor:
        return self.window_stats.dead_channels()

    # ------------------------------------------------------------ post-shift
    def gamma_floor(self, dead: torch.Tensor) -> float:
        """The |γ| floor for revived channels of this layer."""
        if self.gamma_min is not None:
            return self.gamma_min
        healthy = self.weight.detach().abs()[~dead]
        healthy = healthy[torch.isfinite(healthy)]
        if healthy.numel() == 0:
            return self.GAMMA_FLOOR_FALLBACK
        return max(self.GAMMA_FLOOR_RATIO * healthy.median().item(), 1e-6)

    @torch.no_grad()
    def post_shift_(self, dead: torch.Tensor) -> torch.Tensor:
        r"""Move dead channels just inside the trainable region.

        For every channel in ``dead`` (a bool mask), with the window's x̂ mean
        ``m`` and std ``s``, ``z = Φ⁻¹(1 − ρ)`` and ``f`` the |γ| floor::

            γ ← sign(γ) · max(|γ|, f)          (sign + when γ == 0)
            β ← −γ·m − |γ|·z·s

        so that ``y = γ·x̂ + β > 0`` on about a fraction ρ of the elements:
        for γ > 0 exactly when ``x̂ > m + z·s``, for γ < 0 when ``x̂ < m − z·s``.
        Channels whose new values would not be finite are left untouched.
        Returns the mask of channels actually shifted.
        """
        mean, std = self.window_stats.xhat_mean_std()
        floor = self.gamma_floor(dead)
        gamma = self.weight.detach()
        sign = torch.where(gamma < 0, -1.0, 1.0).to(gamma.dtype)
        new_gamma = sign * gamma.abs().clamp(min=floor)
        z = NormalDist().inv_cdf(1.0 - self.active_fraction)
        new_beta = -new_gamma * mean - new_gamma.abs() * z * std
        shift = dead & torch.isfinite(new_gamma) & torch.isfinite(new_beta)
        self.weight.data[shift] = new_gamma[shift].to(self.weight.dtype)
        self.bias.data[shift] = new_beta[shift].to(self.bias.dtype)
        return shift

    def recalibrate_(self, channels: torch.Tensor) -> None:
        """Have the next training pass set the running mean and variance of
        ``channels`` (a bool mask) to that batch's, before normalizing it.

        A re-initializing revival gives a channel a new filter: its old
        running statistics mean nothing, and under frozen statistics
        (mmdet's ``norm_eval=True``) they are what normalizes it.  Over
        every rank of a distributed run (psSyncBN's process group), so the
        ranks keep equal buffers.
        """
        pending = self.pending_recalibration
        channels = channels.to(self.running_mean.device
                               if self.running_mean is not None else 'cpu')
        self.pending_recalibration = (channels if pending is None
                                      else pending | channels)

    @torch.no_grad()
    def recalibration_statistics(self, x: torch.Tensor, channels: torch.Tensor,
                                 reduce: bool = True
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """The running mean and (unbiased) variance that a recalibration on
        input ``x`` gives ``channels`` (a bool mask); over every rank of
        psSyncBN's process group when ``reduce`` and distributed."""
        x = x.detach().transpose(0, 1).flatten(1)[channels].double()
        moments = torch.stack([torch.full((x.shape[0], ), float(x.shape[1]),
                                          dtype=x.dtype, device=x.device),
                               x.sum(1), x.square().sum(1)])
        if reduce and dist.is_available() and dist.is_initialized():
            dist.all_reduce(moments,
                            group=getattr(self, 'process_group', None))
        count, total, squares = moments
        mean = total / count.clamp(min=1)
        var = (squares / count.clamp(min=1) - mean.square()).clamp(min=0)
        var = var * count / (count - 1).clamp(min=1)  # unbiased, as BN's
        return (mean.to(self.running_mean.dtype),
                var.to(self.running_var.dtype))

    @torch.no_grad()
    def _recalibrate(self, x: torch.Tensor) -> None:
        channels, self.pending_recalibration = self.pending_recalibration, None
        if self.running_mean is None:
            return
        mean, var = self.recalibration_statistics(x, channels)
        self.running_mean[channels] = mean
        self.running_var[channels] = var

    # ------------------------------------------------------------ conversion
    @classmethod
    def convert_bn(cls, module: nn.Module, **options) -> nn.Module:
        """Replace every ``BatchNorm2d`` by psBN and ``SyncBatchNorm`` by psSyncBN.

        As torch's ``SyncBatchNorm.convert_sync_batchnorm``: the new layers
        hold the *same* Parameter and buffer objects (an optimizer built
        before the conversion keeps training γ and β), keep the train/eval
        mode, and a child is replaced only when it changed.  ``affine=False``
        and a BN whose bias was removed convert too; without γ and β they
        are monitored, never shifted.  ``options`` are psBN's (``window``,
        ``active_fraction``, ``gamma_min``, ``revival``).  Returns the
        converted module (a new object when ``module`` itself is a BN).
        """
        return _convert(module, lambda layer: (
            (_TO_PSBN[type(layer)], options, None)
            if type(layer) in _TO_PSBN else None))

    @classmethod
    def revert(cls, module: nn.Module) -> nn.Module:
        """The inverse of :meth:`convert_bn`: psBN -> ``BatchNorm2d``,
        psSyncBN -> ``SyncBatchNorm``, sharing Parameters and buffers."""
        return _convert(module, lambda layer: (
            (_TO_BN[type(layer)], {}, None) if type(layer) in _TO_BN
            else None))


# ``_BatchNorm`` is listed again as a direct base on purpose: mmengine's
# ``init_cfg=dict(type='Constant', layer='_BatchNorm')`` (mmdet's ResNet default)
# matches the names of a module's *direct* bases, and must initialize psBN
# exactly as it initializes BN.
@MODELS.register_module(name='psBN')
class psBN(PostShiftMixin, nn.BatchNorm2d, _BatchNorm):
    r"""``BatchNorm2d`` whose dead channels a controller can post-shift back.

    The forward pass is BatchNorm's, bit for bit:

    .. math::

        y = \gamma \cdot \hat{x} + \beta, \qquad
        \hat{x} = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}}

    with batch statistics in training and running statistics in eval mode
    (mmdet's ``norm_eval=True``), the same parameters, buffers and state-dict
    keys.  While the layer trains (gradients on, γ trainable) it also keeps,
    per channel and per *detection window* of ``window`` training passes, the
    maximum of y and the mean m and std s of x̂ in the window's last batch
    (:class:`WindowStatistics`, not in the state dict).  A channel whose y
    was ``<= 0`` everywhere in the window is *dead*: after ReLU it passes no
    gradient to γ, β or its conv filter.  At the window's end a
    :class:`~psbn_mmdet.core.controller.PostShiftController` (or
    :class:`~psbn_mmdet.engine.hooks.post_shift_hook.PostShiftHook`) post-shifts the dead pre-ReLU
    channels (:meth:`post_shift_`), with ``z = Φ⁻¹(1 − ρ)`` and ``f`` the |γ|
    floor:

    .. math::

        \gamma \leftarrow \mathrm{sign}(\gamma)\max(|\gamma|, f), \qquad
        \beta \leftarrow -\gamma m - |\gamma| z s

    so that about a fraction ρ of the channel's elements are positive again
    and gradients flow.  The layer alone never changes its parameters.

    Registered in mmengine's ``MODELS`` as ``psBN`` (abbreviation ``bn``, so
    mmdet names the layers ``bn1``, ``bn2``... as for BN).

    Args:
        num_features: C from an expected input of size (N, C, H, W).
        eps, momentum, affine, track_running_stats, device, dtype: as
            ``torch.nn.BatchNorm2d``.
        window: training forward passes per detection window (>= 1).  The
            controller counts optimizer steps; without gradient
            accumulation the two are equal.  Default: 10.
        active_fraction: ρ in (0, 0.5], the fraction of a revived channel's
            elements made active by the shift.  Default: 0.5 (the threshold
            at x̂'s mean: half the elements, as a newly initialized BN
            channel).
        gamma_min: |γ| floor f of a revived channel; ``None`` (default) uses
            ``GAMMA_FLOOR_RATIO`` (0.1) × the median |γ| of the layer's
            healthy channels.
        revival: what a dead channel becomes at a window's end (a rule of
            :data:`~psbn_mmdet.core.revival.REVIVALS`).
            ``'reinit_init'`` (default): a working unit again, as a newly
            initialized one: a fresh filter at Kaiming norm, γ = 1, its
            running statistics measured on the next batch and the next
            layer's weights on it zeroed
            (:func:`~psbn_mmdet.core.revival.reinit_`), where the
            controller finds that next layer; elsewhere (a ResNet's stem)
            the shift.  ``'reinit'``: the same at the layer's live scale
            (filter norm and |γ| at the live medians).  ``'shift'``: the
            post-shift of γ and β alone.  ``'auto'``: the fresh unit for
            channels dead at the layer's first window end (they arrived
            dead with the weights), the shift for those that die later
            (and the fresh unit where a shift cannot place a channel: a
            collapsed γ or an all-zero filter).  The default is the rule
            chosen across issue 29's cells (docs/inherited_collapse.md);
            issue 38's choice: docs/revival_default.md.

    Unknown options raise a one-line ``TypeError`` naming them.

    Shape:
        - Input: (N, C, H, W)
        - Output: (N, C, H, W) (same shape as input)

    Examples::

        >>> norm_cfg = dict(type='psBN', requires_grad=True, window=50)
        >>> layer = psBN(64, window=50)
        >>> y = layer(torch.randn(8, 64, 14, 14))
        >>> model = psBN.convert_bn(torchvision_resnet)   # BN -> psBN in place
        >>> controller = PostShiftController(model, optimizer)
    """

    def __init__(self, num_features: int, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None,
                 window: int = DEFAULT_WINDOW, active_fraction: float = 0.5,
                 gamma_min: float | None = None,
                 revival: str = DEFAULT_REVIVAL, **unknown) -> None:
        _validate_options(type(self).__name__, window, active_fraction,
                          gamma_min, revival, unknown)
        super().__init__(num_features, eps, momentum, affine,
                         track_running_stats, device, dtype)
        self._init_post_shift(window, active_fraction, gamma_min, revival)


@MODELS.register_module(name='psSyncBN')
class psSyncBN(PostShiftMixin, nn.SyncBatchNorm, _BatchNorm):
    """``SyncBatchNorm`` with psBN's statistics and post-shift (``psSyncBN``).

    Batch statistics are synchronized across the process group as in
    ``SyncBatchNorm``; the options are :class:`psBN`'s.  torch's
    SyncBatchNorm needs GPUs to synchronize in training mode.
    """

    def __init__(self, num_features: int, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group=None,
                 device=None, dtype=None, window: int = DEFAULT_WINDOW,
                 active_fraction: float = 0.5,
                 gamma_min: float | None = None,
                 revival: str = DEFAULT_REVIVAL, **unknown) -> None:
        _validate_options(type(self).__name__, window, active_fraction,
                          gamma_min, revival, unknown)
        super().__init__(num_features, eps, momentum, affine,
                         track_running_stats, process_group, device, dtype)
        self._init_post_shift(window, active_fraction, gamma_min, revival)


PSBN_TYPES = (psBN, psSyncBN)

# source type -> target type of each conversion (exact types: a subclass of
# BatchNorm2d that is not listed, e.g. psBN itself, is left alone)
_TO_PSBN = {nn.BatchNorm2d: psBN, nn.SyncBatchNorm: psSyncBN}
_TO_BN = {psBN: nn.BatchNorm2d, psSyncBN: nn.SyncBatchNorm}

#: γ (or, without one, the running mean) of every psBN layer made in this
#: process -> its options and window statistics.  mmengine's Runner replaces
#: BN layers wholesale (``revert_sync_batchnorm`` in a one-process run,
#: ``convert_sync_batchnorm`` for ``sync_bn``) but keeps their Parameters:
#: :func:`restore_post_shift` finds the layers that were psBN by them.
#: (By identity: tensors do not hash by value; an entry goes with its
#: tensor.)
_MADE: dict[int, tuple[dict, WindowStatistics]] = {}


def _key(module: nn.Module) -> int | None:
    tensor = getattr(module, 'weight', None)
    if tensor is None:
        tensor = getattr(module, 'running_mean', None)
    return None if tensor is None else id(tensor)


def _remember(layer) -> None:
    key = _key(layer)
    if key is not None:
        if key not in _MADE:
            tensor = (layer.weight if layer.weight is not None else
                      layer.running_mean)
            weakref.finalize(tensor, _MADE.pop, key, None)
        _MADE[key] = (layer.options, layer.window_stats)


def _is_sync(module: nn.Module) -> bool:
    """torch's SyncBatchNorm, or mmcv's (``sync_bn='mmcv'``)."""
    return any(cls.__name__ == 'SyncBatchNorm' for cls in type(module).__mro__)


def restore_post_shift(module: nn.Module) -> tuple[nn.Module, int]:
    """Make psBN layers of the BN layers a conversion made of them.

    mmengine's Runner reverts every SyncBatchNorm to a plain BN in a
    one-process run, and converts every BN to torch's or mmcv's SyncBatchNorm
    for ``sync_bn``: psBN and psSyncBN layers lose their post-shift.  A BN
    layer (not psBN) holding the γ of a psBN layer of this process becomes a
    psSyncBN again when it synchronizes, else a psBN, with the same
    Parameters and buffers, options and window statistics (as
    :meth:`psBN.convert_bn`).  Returns the module (a new object when
    ``module`` itself is such a layer) and how many layers were restored.
    """
    restored = 0

    def target_of(layer):
        nonlocal restored
        # mmcv's SyncBatchNorm is no _BatchNorm: any norm layer holding a
        # psBN layer's γ was made of one
        key = (_key(layer) if hasattr(layer, 'num_features')
               and not isinstance(layer, PSBN_TYPES) else None)
        if key is None or key not in _MADE:
            return None
        restored += 1
        options, stats = _MADE[key]
        return (psSyncBN if _is_sync(layer) else psBN), options, stats

    return _convert(module, target_of), restored


def _convert(module: nn.Module, target_of) -> nn.Module:
    """Replace each layer for which ``target_of(layer)`` gives ``(class,
    options, window statistics or None)`` by one of that class holding the
    same Parameters and buffers."""
    output = module
    target = target_of(module)
    if target is not None:
        cls, options, stats = target
        kwargs = dict(eps=module.eps, momentum=module.momentum,
                      affine=module.affine,
                      track_running_stats=module.track_running_stats,
                      device='meta', **options)
        if issubclass(cls, nn.SyncBatchNorm):
            kwargs['process_group'] = getattr(module, 'process_group', None)
        output = cls(module.num_features, **kwargs)
        # the same objects, not copies: optimizers keep working
        for name in ('weight', 'bias'):
            setattr(output, name, getattr(module, name))
        for name in ('running_mean', 'running_var', 'num_batches_tracked'):
            setattr(output, name, getattr(module, name))
        output.train(module.training)
        if hasattr(module, 'qconfig'):
            output.qconfig = module.qconfig
        if isinstance(output, PSBN_TYPES):
            if stats is not None:
                output.window_stats = stats
            _remember(output)
    for name, child in module.named_children():
        new = _convert(child, target_of)
        if new is not child:
            output.add_module(name, new)
    return output
