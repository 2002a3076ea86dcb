"""Per-channel statistics of a BN over a detection window: the controller's input.

:class:`WindowStatistics` is what a post-shifting layer keeps while it trains
and what :class:`~psbn_mmdet.core.controller.PostShiftController` reads,
all-reduces and resets at every window's end.  :class:`PostShiftable` is the
layer's side of that contract (psBN and psSyncBN implement it).  Plain
PyTorch, no mmengine.
"""
from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from .criteria import channel_max

#: detection window (training steps) of psBN layers and of monitored BN layers
DEFAULT_WINDOW = 10


def is_trainable(bn: _BatchNorm) -> bool:
    """True when ``bn`` has a trainable γ and a β: what a shift moves."""
    return (bn.affine and bn.weight is not None and bn.bias is not None
            and bn.weight.requires_grad)


def is_training_pass(bn: _BatchNorm) -> bool:
    """True when a forward pass of ``bn`` trains it: gradients on, γ and β
    there and trainable.

    Validation and inference (no grad) and frozen layers cost nothing.
    """
    return torch.is_grad_enabled() and is_trainable(bn)


class WindowStatistics:
    """Per-channel statistics of one BN over the current detection window.

    ``max``: maximum of the BN output y over the window; ``nonfinite``: batches
    whose maximum was NaN or Inf; ``batches``; ``xhat_mean`` / ``xhat_var``:
    mean and variance of x̂ in the window's *last* batch, exactly as BN
    normalized it (batch statistics with eps, or running statistics).  The
    last batch, not the window average: a dying channel's conv filter keeps
    shrinking, and under batch statistics x̂'s std is ``sqrt(σ²/(σ² + eps))``,
    far below 1 once σ² nears eps, so assuming std 1 would leave a shifted
    channel dead (docs/collapse_study.md).

    ``enabled``: collection on, set by a controller for the layers it reads
    (pre-ReLU ones) and off by default, so that a layer nobody reads costs
    what BN costs; ``attached``: a controller drives the layer.

    ``window`` is the number of batches the owner expects per window.  The x̂
    moments are only needed at the window's end, so they are computed for the
    first batch (a fallback for a window cut short) and from batch ``window``
    on: twice per window instead of every batch.  ``window=1`` computes them
    every batch.

    Plain tensors, not buffers: they never enter a model's state dict (BN and
    psBN checkpoints keep the same keys).  Allocated on the first update, on
    the input's device.  :meth:`state_dict` / :meth:`load_state_dict` carry
    a window that a checkpoint cuts in two (the controller saves them under
    its own checkpoint key).

    This class is the layer's extension point: ``layer.window_stats`` may be
    replaced by a subclass that changes how x̂ is estimated for the shift.  The
    layer calls :meth:`update` on every training pass; the controller reads
    ``max``, ``nonfinite``, ``batches``, ``xhat_mean`` / ``xhat_var`` (it
    all-reduces them across ranks), calls :meth:`dead_channels`, and
    :meth:`reset` at every window's end; the shift reads
    :meth:`xhat_mean_std`.  :meth:`xhat_moments` computes one batch's exact
    moments for subclasses to reuse.
    """

    def __init__(self, window: int = 1) -> None:
        self.window = window
        self.enabled = False
        self.attached = False
        self.reset()

    def reset(self) -> None:
        self.max = self.nonfinite = None
        self.xhat_mean = self.xhat_var = None
        self.batches = 0

    #: what :meth:`state_dict` holds
    FIELDS = ('max', 'nonfinite', 'xhat_mean', 'xhat_var')

    def state_dict(self) -> dict:
        """The window so far: its tensors (on the CPU) and batch count."""
        state = {name: None if getattr(self, name) is None else
                 getattr(self, name).detach().cpu().clone()
                 for name in self.FIELDS}
        state['batches'] = self.batches
        return state

    def load_state_dict(self, state: dict, device=None) -> None:
        """Continue the window :meth:`state_dict` saved."""
        for name in self.FIELDS:
            value = state[name]
            setattr(self, name, None if value is None else
                    torch.as_tensor(value).to(device))
        self.batches = int(state['batches'])

    def wants_moments(self) -> bool:
        """True when the next batch's x̂ moments may be the window's last."""
        return self.batches == 0 or self.batches + 1 >= self.window

    @torch.no_grad()
    def update(self, bn: _BatchNorm, x: torch.Tensor, y: torch.Tensor) -> None:
        batch_max = channel_max(y.detach()).float()
        if self.wants_moments():
            self._keep_informative(*self.xhat_moments(bn, x.detach()))
        # A NaN or Inf batch is counted, so that it never makes a channel dead.
        nonfinite = (~torch.isfinite(batch_max)).float()
        if self.max is None:
            self.max, self.nonfinite = batch_max, nonfinite
        else:
            torch.maximum(self.max, batch_max, out=self.max)
            self.nonfinite.add_(nonfinite)
        self.batches += 1

    def _keep_informative(self, mean: torch.Tensor,
                          var: torch.Tensor) -> None:
        """Take a batch's x̂ moments where the channel's input had spread.

        A batch in which a channel is constant (an all-zero image batch, a
        padded-out map) says nothing about where its x̂ lies: its moments
        (std 0) would place β so that half the channel fires.  Such a
        channel keeps the moments of the window's last batch that had
        spread; without any, its moments are NaN, and it is neither counted
        dead nor shifted in this window.
        """
        informative = var > 0
        if self.xhat_mean is None:
            nan = torch.full_like(mean, math.nan)
            self.xhat_mean = torch.where(informative, mean, nan)
            self.xhat_var = torch.where(informative, var, nan)
        else:
            self.xhat_mean = torch.where(informative, mean, self.xhat_mean)
            self.xhat_var = torch.where(informative, var, self.xhat_var)

    @staticmethod
    def xhat_moments(bn: _BatchNorm,
                      x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of x̂ per channel for this batch.

        The variance of x is taken about a per-channel reference value of the
        batch (its first element), not as E[x²] − E[x]²: in float32 the
        latter cancels when a channel's mean is large against its spread, and
        a shift computed from it would open far more than ρ of the elements.
        """
        if x.dtype != torch.float32:  # bf16/fp16 under autocast
            x = x.float()
        spatial = tuple(range(2, x.dim()))
        reference = x[(0, slice(None)) + (0, ) * len(spatial)].view(
            (1, -1) + (1, ) * len(spatial))
        centred = x - reference
        offset = centred.mean(dim=spatial).mean(dim=0)
        var = ((torch.linalg.vector_norm(centred, dim=spatial).square() /
                x[0, 0].numel()).mean(dim=0) - offset.square()).clamp(min=0.0)
        if bn.training or bn.running_mean is None:
            return torch.zeros_like(var), var / (var + bn.eps)
        # x̂ = (x - running_mean) / sqrt(running_var + eps)
        inv_var = 1.0 / (bn.running_var.float() + bn.eps)
        # reference − running_mean first: exact when both are close
        mean = (reference.view(-1) - bn.running_mean.float()) + offset
        return mean * inv_var.sqrt(), var * inv_var

    def xhat_mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of x̂ per channel in the window's last batch."""
        return self.xhat_mean, self.xhat_var.sqrt()

    def dead_channels(self) -> torch.Tensor:
        """Channels whose output was ``<= 0`` everywhere in the window.

        Non-finite statistics (a NaN or Inf batch) never count as dead, nor
        does a channel whose input had no spread in any batch the moments
        were taken from (see :meth:`_keep_informative`).
        """
        mean, std = self.xhat_mean_std()
        finite = (torch.isfinite(mean) & torch.isfinite(std)
                  & (self.nonfinite == 0))
        return finite & (self.max <= 0)

    def silent_channels(self) -> torch.Tensor:
        """Channels whose output was ``<= 0`` everywhere in the window,
        with or without spread: :meth:`dead_channels` plus those whose input
        was constant (a filter decayed to 0).  A shift cannot place those;
        a new filter can."""
        return (self.nonfinite == 0) & (self.max <= 0)


@runtime_checkable
class PostShiftable(Protocol):
    """A BN layer that keeps :class:`WindowStatistics` and post-shifts its
    dead channels (:class:`~psbn_mmdet.models.layers.psbn.psBN`,
    ``psSyncBN``): what the controller drives."""

    window: int
    window_stats: WindowStatistics

    def post_shift_(self, dead: torch.Tensor) -> torch.Tensor:
        ...
