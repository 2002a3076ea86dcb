"""Candidate revival rules on top of psBN's shift (issue 23, step 4).

psBN's post-shift moves only a dead channel's γ and β.  Under Adam + coupled
L2 the channel's conv filter and the next layer's weights on it have decayed
toward 0 by then, so the revived channel's x̂ has almost no spread and feeds
almost-zero weights (docs/capacity_study_notes.md, step 3).  A
:class:`Revival` is a controller callback (``controller.callbacks``, called
after the controller's post-shift of each window) that changes, for exactly
the channels the window shifted (``result.shifted_channels``):

* ``filter``: ``'keep'`` (psBN as shipped); ``'rescale'``: the incoming conv
  filter scaled to the median norm of the layer's live channels' filters,
  direction kept (BN is invariant to the filter's scale except through eps,
  so x̂ regains unit spread and the channel's running statistics are scaled
  with it: mean × k, variance × k²); ``'fresh'``: a new random direction
  (xavier-uniform, ReDo's draw) at that norm, running statistics measured on
  the layer's last training batch;
* ``gamma``: ``'shipped'`` (psBN's floor, 0.1 × the live median |γ|) or
  ``'live'``: |γ| raised to the live median |γ|;
* ``outgoing``: 0 leaves the next layer's weights on the channel alone; a
  fraction ``a`` raises ``‖W_next[:, c]‖`` to ``a`` × the live channels'
  median (direction kept; a random one where the slice is exactly 0);
* the changed filter rows' and outgoing columns' optimizer moments: first
  moments zeroed, second moments set to the element-wise median over the
  live rows / columns (the controller's ``'healthy'`` reset, for weights).

β: with ``active_fraction`` 0.5 (z = 0) psBN puts the threshold at x̂'s mean,
β = −γ·m, whatever the filter's scale; a rule that changes γ by a factor r
scales β by r (same threshold); ``'fresh'`` sets β = 0 (x̂'s mean under batch
statistics).  Other active fractions are refused (z·s would need the new
filter's x̂ std).

**Function change at a shift.**  Only the shifted channels' outputs change
(their filter, γ, β, running statistics and outgoing weights are theirs
alone), and the next layer sees them through ReLU and the outgoing weights.
Before the shift the channel was dead on every batch of the window (ReLU
output 0).  So on any batch, the next layer's input changes at any output
position by at most ``Σ_c ‖W_next[:, c]‖₁,max · max ReLU(y_c)``, where
``‖·‖₁,max`` is the largest L1 norm over the next layer's output units of
the weights reading channel c (summed over the kernel) — :func:`shift_bound`
computes it on a batch and ``tests/research/test_revival.py`` checks it.

A research variant: plain PyTorch, this process's batch; the product's rule
would all-reduce the statistics it reads (``'fresh'`` reads a batch).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
from torch import nn

from psbn_mmdet.core import is_training_pass
from research.redo import units_of

FILTERS = ('keep', 'rescale', 'fresh')
GAMMAS = ('shipped', 'live')


@dataclass(frozen=True)
class Rule:
    filter: str = 'keep'
    gamma: str = 'shipped'
    outgoing: float = 0.0  # fraction of the live median outgoing norm

    def __post_init__(self) -> None:
        if self.filter not in FILTERS or self.gamma not in GAMMAS:
            raise ValueError(f'unknown rule {self}')
        if not 0.0 <= self.outgoing <= 1.0:
            raise ValueError(f'outgoing must be in [0, 1], got {self}')


def _healthy_moments(optimizer, param: torch.Tensor, changed: torch.Tensor,
                     live: torch.Tensor, dim: int) -> None:
    """Optimizer state of ``param``'s ``changed`` slices along ``dim``: first
    moments 0, second moments the element-wise median of the ``live``
    slices (a momentum buffer is zeroed)."""
    if optimizer is None:
        return
    state = optimizer.state.get(param)
    for key, value in (state or {}).items():
        if not (torch.is_tensor(value) and value.shape == param.shape):
            continue
        moved = value.movedim(dim, 0)
        if key in ('exp_avg_sq', 'max_exp_avg_sq') and live.any():
            moved[changed] = moved[live].median(dim=0).values
        else:
            moved[changed] = 0


def _channel_outputs(unit, x: torch.Tensor, mask: torch.Tensor):
    """ReLU(BN(conv(x))) of the ``mask`` channels on batch ``x`` under batch
    statistics (no running-statistics update), shape (N, k, H, W)."""
    conv, bn = unit.conv, unit.bn
    pre = nn.functional.conv2d(x, conv.weight[mask], None, conv.stride,
                               conv.padding, conv.dilation, conv.groups)
    y = nn.functional.batch_norm(pre, None, None, bn.weight[mask],
                                 bn.bias[mask], training=True, eps=bn.eps)
    return y.clamp(min=0)


@torch.no_grad()
def shift_bound(unit, x: torch.Tensor, mask: torch.Tensor) -> float:
    """The bound on the change of the next layer's input (any element) when
    the ``mask`` channels, dead before, fire as they do now on batch ``x``
    (the conv's input, training mode): Σ_c ‖W_next[:, c]‖₁,max · max
    ReLU(y_c) (pooling between is 1-Lipschitz in the max norm and keeps a
    channel's maximum)."""
    if not mask.any():
        return 0.0
    return float(channel_reach(unit, x, mask).sum())


@torch.no_grad()
def channel_reach(unit, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per ``mask`` channel, ‖W_next[:, c]‖₁,max · max ReLU(y_c) on batch
    ``x``: the most it moves any element of the next layer's input (the
    terms of :func:`shift_bound`; for live channels, the scale the bound is
    compared with)."""
    peak = _channel_outputs(unit, x, mask).amax(dim=(0, 2, 3))
    weights = unit.outgoing[0].weight.detach()
    c = weights.shape[1]
    l1 = weights.abs().transpose(0, 1).reshape(c, weights.shape[0], -1).sum(
        2).amax(1)[mask]
    return l1 * peak


class Revival:
    """A controller callback applying ``rule`` to every shifted channel.

    Also a probe of :func:`research.collapse_study.training.run` (``after_step``
    changes nothing; the change happens inside ``controller.step()``, so
    run's intervention loss measures it).  ``close()`` reports the channels
    changed and the largest :func:`shift_bound` measured at a shift.
    """

    def __init__(self, model, optimizer, controller, rule: Rule,
                 seed: int = 0) -> None:
        if rule.filter != 'keep' or rule.gamma != 'shipped':
            for name in controller.pre_relu:
                fraction = getattr(controller.bns[name], 'active_fraction',
                                   0.5)
                if fraction != 0.5:
                    raise ValueError('Revival needs active_fraction 0.5')
        self.rule, self.optimizer, self.controller = rule, optimizer, controller
        self.units = {u.name: u for u in units_of(model)
                      if u.name in controller.pre_relu}
        self.generator = torch.Generator().manual_seed(seed)
        self.inputs: dict[str, torch.Tensor] = {}
        self.handles = [u.conv.register_forward_pre_hook(self._keep(n))
                        for n, u in self.units.items()]
        self.changed = 0
        self.bounds: list[float] = []
        #: each shift's bound over a median live channel's reach
        self.relative: list[float] = []
        controller.callbacks.append(self)

    def _keep(self, name: str):
        bn = self.units[name].bn

        def hook(module, args):
            if is_training_pass(bn) and torch.is_grad_enabled():
                self.inputs[name] = args[0].detach()
        return hook

    @torch.no_grad()
    def __call__(self, result) -> None:
        for name, shifted in result.shifted_channels.items():
            unit = self.units.get(name)
            if unit is None or not shifted.any():
                continue
            dead = self.controller.last_dead[name]
            live = ~dead
            if not live.any():
                continue
            self.apply(unit, shifted, live, self.inputs.get(name))
            self.changed += int(shifted.sum())
            if name in self.inputs:
                x = self.inputs[name]
                bound = shift_bound(unit, x, shifted)
                self.bounds.append(bound)
                # against one median live channel's reach (same batch)
                live_reach = float(channel_reach(
                    unit, x, live & ~shifted).median())
                if live_reach > 0:
                    self.relative.append(bound / live_reach)

    @torch.no_grad()
    def apply(self, unit, shifted: torch.Tensor, live: torch.Tensor,
              x: torch.Tensor | None) -> None:
        rule, conv, bn = self.rule, unit.conv, unit.bn
        weight = conv.weight
        norms = weight.flatten(1).norm(dim=1)
        target = norms[live].median()
        if rule.filter == 'rescale':
            fresh = shifted & (norms == 0)  # no direction left to keep
            scale = shifted & ~fresh
            k = target / norms[scale]
            weight[scale] *= k.view(-1, *[1] * (weight.dim() - 1))
            if bn.running_mean is not None:
                bn.running_mean[scale] *= k
                bn.running_var[scale] *= k.square()
            if fresh.any():
                self._fresh(unit, fresh, target, x)
        elif rule.filter == 'fresh':
            self._fresh(unit, shifted, target, x)
        if rule.filter != 'keep':
            _healthy_moments(self.optimizer, weight, shifted, live, 0)
        if rule.gamma == 'live':
            gamma = bn.weight
            floor = gamma[live].abs().median()
            new = torch.where(gamma < 0, -1.0, 1.0) * gamma.abs().clamp(
                min=floor)
            ratio = torch.where(gamma != 0, new / gamma, 1.0)
            bn.bias[shifted] *= ratio[shifted]
            gamma[shifted] = new[shifted]
        if rule.outgoing > 0:
            self._raise_outgoing(unit, shifted, live)

    def _fresh(self, unit, mask, target, x) -> None:
        conv, bn = unit.conv, unit.bn
        draw = torch.empty(conv.weight.shape)
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(draw)
        bound = nn.init.calculate_gain('relu') * (6.0 / (fan_in + fan_out))**0.5
        draw.uniform_(-bound, bound, generator=self.generator)
        draw = draw[mask]
        draw *= target / draw.flatten(1).norm(dim=1).view(
            -1, *[1] * (draw.dim() - 1))
        conv.weight[mask] = draw.to(conv.weight)
        bn.bias[mask] = 0  # the threshold at x̂'s mean under batch statistics
        if bn.running_mean is None:
            return
        if x is None:
            bn.running_mean[mask], bn.running_var[mask] = 0, 1
            return
        pre = nn.functional.conv2d(x, conv.weight[mask], None, conv.stride,
                                   conv.padding, conv.dilation, conv.groups)
        bn.running_mean[mask] = pre.mean(dim=(0, 2, 3))
        bn.running_var[mask] = pre.transpose(0, 1).flatten(1).var(dim=1)

    def _raise_outgoing(self, unit, shifted, live) -> None:
        for layer in unit.outgoing:
            w = layer.weight.movedim(1, 0)  # channel-major view
            norms = w.flatten(1).norm(dim=1)
            target = self.rule.outgoing * norms[live].median()
            low = shifted & (norms < target)
            if not low.any():
                continue
            direction = w[low].clone()
            empty = direction.flatten(1).norm(dim=1) == 0
            if empty.any():
                draw = torch.empty(direction[empty].shape)
                draw.normal_(generator=self.generator)
                direction[empty] = draw.to(direction)
            direction *= (target / direction.flatten(1).norm(dim=1)).view(
                -1, *[1] * (direction.dim() - 1))
            w[low] = direction
            _healthy_moments(self.optimizer, layer.weight, low, live, 1)

    def after_step(self, result) -> bool:
        return False  # acts inside controller.step() (a callback)

    def close(self) -> dict:
        for handle in self.handles:
            handle.remove()
        if self in self.controller.callbacks:
            self.controller.callbacks.remove(self)
        return self.summary()

    def summary(self) -> dict:
        """What the rule did so far: channels changed, shift bounds."""
        return dict(kind='revival', rule=self.rule.__dict__,
                    changed=self.changed,
                    max_shift_bound=max(self.bounds) if self.bounds else None,
                    mean_shift_bound=(sum(self.bounds) / len(self.bounds)
                                      if self.bounds else None),
                    max_relative_bound=(max(self.relative) if self.relative
                                        else None),
                    median_relative_bound=(
                        statistics.median(self.relative) if self.relative
                        else None))


def _register_hook():
    """``RevivalHook`` for mmengine's ``custom_hooks``: a :class:`Revival`
    on the run's :class:`PostShiftHook` controller (list it after that hook;
    research configs import this module through ``custom_imports``)."""
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS

    from psbn_mmdet.engine.hooks import find_controller, runner_model

    @HOOKS.register_module(force=True)
    class RevivalHook(Hook):
        """Applies ``Rule(filter, gamma, outgoing)`` to every channel the
        run's controller shifts; saves :meth:`Revival.summary` under
        ``revival``."""

        priority = 'NORMAL'

        def __init__(self, filter: str = 'keep', gamma: str = 'shipped',
                     outgoing: float = 0.0, seed: int = 0) -> None:
            self.rule = Rule(filter, gamma, outgoing)
            self.seed, self.revival = seed, None

        def before_train(self, runner) -> None:
            controller = find_controller(runner, 'RevivalHook')
            model = runner_model(runner)
            self.revival = Revival(model, runner.optim_wrapper.optimizer,
                                   controller, self.rule, seed=self.seed)

        def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
            if self.revival is not None:
                checkpoint['revival'] = self.revival.summary()

    return RevivalHook


RevivalHook = _register_hook()
