"""The revival rules: what a psBN layer's dead channel becomes at a window's end.

Three rules (:data:`REVIVALS`), chosen per layer by psBN's ``revival``
option (or for every layer by the controller's):

* ``'shift'``: psBN's post-shift of γ and β alone
  (:meth:`~psbn_mmdet.models.layers.psbn.PostShiftMixin.post_shift_`).  It
  makes the channel *active*; its conv filter, |γ| and the next layer's
  weights on it keep the sizes that collapse left them (often 0.02-0.17 of a
  live channel's), and each one's gradient is proportional to the others, so
  the channel fires without learning (docs/capacity_study_notes.md).
* ``'reinit'``: the channel becomes a working unit again, as a newly
  initialized one (:func:`reinit_`): a fresh random filter direction at the
  median norm of the layer's live filters, |γ| at the live median, β at the
  threshold of ``active_fraction``, running statistics measured on the next
  training batch, the outgoing weights on it zeroed (so the network computes
  what it computed before, and those weights get a gradient from a healthy
  activation: ReDo's trick, Sokar et al. 2023), and the optimizer state of
  every touched entry zeroed.
* ``'reinit_init'``: as ``'reinit'``, at the scale of a newly
  initialized layer instead of the live one: γ = 1 and the filter at Kaiming
  norm √2.  Where a checkpoint arrives collapsed on a shifted task, the live
  scale (itself shrunk by the regularizer that collapsed the layer)
  recovers 4 points less than ReDo, the init scale 0.5 (issue 29,
  docs/inherited_collapse.md).
* ``'auto'``: per channel, from when and how it died.  What is dead at the
  layer's *first* window end has been dead on every batch since training
  started: it arrived dead with the weights, whose filter and γ the
  collapse has decayed, so it becomes a fresh unit (``'reinit_init'``).  A
  channel that dies *later* still holds the filter it learned (a window
  ago it fired), so it is shifted back as it was (``'shift'``), unless a
  shift cannot place it: silent with a collapsed γ (|γ| < 1e-3) or an
  all-zero filter, which also becomes a fresh unit.  Issue 38: each of the
  two rules wins its own regime (inherited collapse: the fresh unit;
  collapse during training: the shift); ``'auto'`` applies each where its
  regime is, decided from the channel's own history.

The re-initializing rules need to know which layers read the channel: a :class:`Unit`
(:func:`units_of`); :func:`applied_rule` says which rule a layer's dead
channels get, and :func:`plan` which channel gets which.  Inside a ResNet block that is the block's next conv
(:func:`~psbn_mmdet.core.roles.inner_links`); in an ``nn.Sequential`` conv net
the next conv or linear layer, when only channel-wise layers (pools, ReLU,
dropout, a flatten after a global pool) stand between.  A pre-ReLU BN with
no unit (the ResNet stem, whose output also reaches the identity shortcut)
falls back to ``'shift'``; pre-add BNs (a block's last BN, ``downsample``)
are never touched by either rule.

The fresh directions are drawn from a generator seeded by (seed, step,
layer), never from a running generator: every rank draws the same filters,
and a resumed run draws what the uninterrupted run drew.  Plain PyTorch.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .roles import inner_links

#: the revival rules (psBN's ``revival`` option)
REVIVALS = ('shift', 'reinit', 'reinit_init', 'auto')
#: the scale each re-initializing rule gives a revived unit (:func:`reinit_`)
REINIT_SCALES = {'reinit': 'live', 'reinit_init': 'init', 'auto': 'init'}
#: the rule of a psBN layer whose config names none
DEFAULT_REVIVAL = 'reinit_init'
#: convs that standardize their weight before using it (mmcv's ConvWS2d,
#: ConvAWS2d, SAConv2d): a zeroed column is re-standardized into a non-zero
#: one, so such a reader cannot mute a revived channel (no unit: the shift)
STANDARDIZED_CONVS = ('ConvWS2d', 'ConvAWS2d', 'SAConv2d')
#: layers that keep channel c at channel c (between a unit and its reader)
CHANNELWISE = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
               nn.AdaptiveMaxPool2d, nn.Dropout, nn.Identity)


def applied_rule(rule: str, unit: Unit | None) -> str:
    """The rule a layer configured with ``rule`` applies: a re-initializing
    rule (or ``'auto'``) where the layer has a unit whose conv trains, else
    ``'shift'``."""
    if (rule in REINIT_SCALES and unit is not None
            and unit.conv.weight.requires_grad):
        return rule
    return 'shift'


def fresh_rule(rule: str) -> str:
    """The rule ``rule`` applies, where it re-initializes, to what is dead
    at a layer's first window end: ``'auto'`` resolved to its fresh unit."""
    return 'reinit_init' if rule == 'auto' else rule


def first_window_rule(rule: str, unit: Unit | None) -> str:
    """The rule a layer configured with ``rule`` (and with ``unit``, or
    None) applies to what is dead at its first window end: what a
    checkpoint brings."""
    return fresh_rule(applied_rule(rule, unit))


def plan(rule: str, dead: torch.Tensor, unfit: torch.Tensor,
         first_window: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Which channels a layer re-initializes and which it shifts.

    ``rule`` is the layer's :func:`applied_rule`; ``dead`` the window's dead
    channels; ``unfit`` the silent channels a shift cannot place (a
    collapsed γ or an all-zero filter); ``first_window``: this is the
    layer's first window end.  Returns ``(reinit, shift)`` masks:

    * ``'shift'``: ``(∅, dead)``
    * ``'reinit'``, ``'reinit_init'``: ``(dead ∪ unfit, ∅)``
    * ``'auto'``: at the first window end as ``'reinit_init'``; later
      ``(unfit, dead − unfit)``.
    """
    none = torch.zeros_like(dead)
    if rule not in REINIT_SCALES:
        return none, dead
    unfit = unfit.to(dead.device)
    if rule != 'auto' or first_window:
        return dead | unfit, none
    return unfit, dead & ~unfit


def check_revival(revival) -> None:
    """Raise a one-line ``ValueError`` for an unknown rule."""
    if revival not in REVIVALS:
        raise ValueError(f'revival must be one of {REVIVALS}, '
                         f'got {revival!r}')


@dataclass(frozen=True)
class Unit:
    """A conv-BN-ReLU channel group: the conv the BN normalizes and the
    layers that read its ReLU output (their input columns are the BN's
    channels)."""
    conv: nn.Conv2d
    outgoing: tuple[nn.Module, ...]


def units_of(model: nn.Module) -> dict[str, Unit]:
    """Units by BN module name: ResNet blocks' inner BNs and the conv-BN-ReLU
    layers of ``nn.Sequential`` conv nets (see the module docstring)."""
    units = {}
    for name, module in model.named_modules():
        prefix = f'{name}.' if name else ''
        links = inner_links(module)
        if links is not None:
            for link in links:
                unit = _checked(getattr(module, link.conv),
                                getattr(module, link.norm),
                                [getattr(module, link.next_conv)])
                if unit is not None:
                    units[prefix + link.norm] = unit
        elif isinstance(module, nn.Sequential):
            units.update(_sequential_units(prefix, module))
    return units


def _checked(conv, bn, outgoing) -> Unit | None:
    """A :class:`Unit` when the shapes say the readers' columns are the
    BN's channels (no groups), else None."""
    if not (isinstance(conv, nn.Conv2d) and isinstance(bn, _BatchNorm)):
        return None
    c = bn.num_features
    for layer in outgoing:
        if isinstance(layer, nn.Conv2d):
            fits = (layer.groups == 1 and layer.in_channels == c
                    and type(layer).__name__ not in STANDARDIZED_CONVS)
        else:
            fits = isinstance(layer, nn.Linear) and layer.in_features == c
        if not fits:
            return None
    return Unit(conv, tuple(outgoing)) if conv.out_channels == c else None


def _sequential_units(prefix: str, seq: nn.Sequential) -> dict[str, Unit]:
    children = list(seq.named_children())
    units = {}
    for i in range(len(children) - 2):
        (_, conv), (bn_name, bn), (_, relu) = children[i:i + 3]
        if not isinstance(relu, nn.ReLU):
            continue
        reader, pooled = None, False
        for _, module in children[i + 3:]:
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                reader = module
                break
            if isinstance(module, (nn.AdaptiveAvgPool2d,
                                   nn.AdaptiveMaxPool2d)):
                pooled = True
            elif isinstance(module, nn.Flatten) and pooled:
                continue
            elif not isinstance(module, CHANNELWISE):
                break
        if isinstance(reader, nn.Linear) and not pooled:
            continue  # a flattened map: a channel spans many columns
        unit = _checked(conv, bn, [reader]) if reader is not None else None
        if unit is not None:
            units[prefix + bn_name] = unit
    return units


def draw_seed(seed: int, step: int, index: int) -> int:
    """The generator seed of layer ``index``'s draws at controller ``step``:
    a function of the three alone (exact resume).  ``seed`` must be the
    same on every rank (the hook takes it from ``randomness.seed`` itself,
    never from a per-rank seed)."""
    return (seed * 1_000_003 + step * 7_919 + index) % (2**63 - 1)


def _live_median(values: torch.Tensor, live: torch.Tensor,
                 fallback: float) -> float:
    values = values[live]
    values = values[torch.isfinite(values)]
    return values.median().item() if values.numel() else fallback


@torch.no_grad()
def reinit_(bn: _BatchNorm, unit: Unit, revive: torch.Tensor,
            live: torch.Tensor, generator: torch.Generator,
            active_fraction: float = 0.5,
            scale: str = 'live') -> list[tuple[torch.Tensor,
                                                        torch.Tensor, int]]:
    r"""Make the channels in ``revive`` working units again (rule ``'reinit'``).

    For each channel c in ``revive`` (a bool mask), with ``live`` the
    layer's channels that were not dead, ``z = Φ⁻¹(1 − ρ)``::

        W_c    ← ‖W‖_live · u,  u uniform on the unit sphere   (conv filter)
        b_c    ← 0                                            (conv bias)
        γ_c    ← median_live |γ|,   β_c ← −γ_c · z
        μ_c, σ²_c ← the next training batch's mean and variance of x_c
        W_next[:, c] ← 0                                      (every reader)

    and the optimizer state of every entry changed is reset
    (:func:`~psbn_mmdet.core.optimizer_state.reset_optimizer_state`, by the
    caller, on the slices returned).

    ``‖W‖_live`` is the median filter norm of the live channels (the layer's
    initial scale, ``kaiming_normal``'s, when none is live).  The running
    statistics are measured by the layer on its next training pass
    (``recalibrate_``), so that x̂_c has mean 0 and variance 1 there, also
    under frozen statistics (mmdet's ``norm_eval=True``), and the channel
    is active on about ρ of the elements.

    **Function change.**  Every reader's weights on c are 0 afterwards, so
    the channel's new output contributes exactly nothing; before, the
    channel was dead on every batch of the window (ReLU output 0).  On those
    batches the network's output is unchanged; elsewhere it changes by what
    the dead channel's decayed outgoing weights carried.

    Returns ``(tensor, mask, dim)`` for each slice changed, for
    :func:`~psbn_mmdet.core.optimizer_state.reset_optimizer_state`.
    """
    conv, device = unit.conv, bn.weight.device
    weight = conv.weight
    norms = weight.detach().flatten(1).norm(dim=1).float()
    # kaiming_normal (std sqrt(2 / fan_in)) draws filters of norm ≈ sqrt(2)
    target = (_live_median(norms, live, 2.0**0.5) if scale == 'live'
              else 2.0**0.5)
    fresh = torch.randn((int(revive.sum()), ) + tuple(weight.shape[1:]),
                        generator=generator)
    fresh *= target / fresh.flatten(1).norm(dim=1).clamp(min=1e-12).view(
        (-1, ) + (1, ) * (fresh.dim() - 1))
    weight[revive] = fresh.to(device=device, dtype=weight.dtype)
    touched = [(weight, revive, 0)]
    if conv.bias is not None:
        conv.bias[revive] = 0
        touched.append((conv.bias, revive, 0))
    gamma = (_live_median(bn.weight.detach().abs().float(), live, 1.0)
             if scale == 'live' else 1.0)
    z = NormalDist().inv_cdf(1.0 - active_fraction)
    bn.weight[revive] = gamma
    bn.bias[revive] = -gamma * z
    touched += [(bn.weight, revive, 0), (bn.bias, revive, 0)]
    recalibrate = getattr(bn, 'recalibrate_', None)
    if recalibrate is not None:
        recalibrate(revive)
    for layer in unit.outgoing:
        layer.weight[:, revive] = 0
        touched.append((layer.weight, revive, 1))
    return touched
