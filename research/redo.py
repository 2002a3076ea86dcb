"""ReDo, the peer baseline: recycle dormant units (Sokar et al., ICML 2023).

Reference code: google/dopamine ``dopamine/labs/redo/weight_recyclers.py``
(``NeuronRecycler``).  Every ``period`` steps, a unit's score is its mean
|activation| over a batch divided by the mean score of its layer
(``estimate_neuron_score``); units with score ``<= tau`` are recycled: their
incoming weights re-initialized (``xavier_uniform``; here with ReLU gain,
BasicNet's own initialization, where the reference uses gain 1; bias
zeroed), their outgoing weights zeroed, and the optimizer moments of both
reset to zero.
The reference's default threshold is ``tau = 0`` (``dead_neurons_threshold``):
exactly the units that are dead on the batch.

For a conv-BN-ReLU unit the incoming weights are the conv filter and the BN's
affine γ, β (BN's own initialization, γ = 1 and β = 0: a re-initialized filter
behind a β that kept the channel dead would stay dead), and its running
statistics are reset to BN's initial ones.  As in the reference's ResNet
setting, only units whose outgoing weights can be zeroed are recycled: inside
a residual block (``bn1`` of a BasicBlock, ``bn1`` and ``bn2`` of a
Bottleneck), every conv layer of a plain conv net (the next conv, or the
linear layer after global pooling).  Stem channels also reach the identity
shortcut and are left alone.

A research baseline, not a product feature: the studies run it side by side
with psBN (``research.collapse_study`` variant ``redo``,
``research.detection_study`` norm ``ReDo``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from psbn_mmdet.core import inner_links, is_training_pass


@dataclass
class Unit:
    """A layer of conv-BN-ReLU units and the layers that read its output."""
    name: str  # the BN's module name
    conv: nn.Conv2d
    bn: _BatchNorm
    outgoing: list  # nn.Conv2d / nn.Linear layers fed by the ReLU


def units_of(model: nn.Module, trainable_only: bool = True) -> list[Unit]:
    """The recyclable units of ``model``: ResNet blocks' internal channels and
    conv layers of an ``nn.Sequential`` conv net (see the module docstring).
    ``trainable_only``: skip frozen layers (mmdet's ``frozen_stages``)."""
    units = []
    for name, module in model.named_modules():
        prefix = f'{name}.' if name else ''
        links = inner_links(module)
        if links is None:
            if isinstance(module, nn.Sequential):
                units += _sequential_units(prefix, module)
            continue
        units += [Unit(prefix + link.norm, getattr(module, link.conv),
                       getattr(module, link.norm),
                       [getattr(module, link.next_conv)]) for link in links]
    if trainable_only:
        units = [u for u in units if u.bn.weight is not None
                 and u.bn.weight.requires_grad]
    return units


def _sequential_units(prefix: str, seq: nn.Sequential) -> list[Unit]:
    children = list(seq.named_children())
    units = []
    for i in range(len(children) - 2):
        (_, conv), (bn_name, bn), (_, relu) = children[i:i + 3]
        if not (isinstance(conv, nn.Conv2d) and isinstance(bn, _BatchNorm)
                and isinstance(relu, nn.ReLU)):
            continue
        after = next((m for _, m in children[i + 3:]
                      if isinstance(m, (nn.Conv2d, nn.Linear))), None)
        if after is not None:
            units.append(Unit(prefix + bn_name, conv, bn, [after]))
    return units


class ReDo:
    """Scores units on the training batches and recycles the dormant ones.

    Args:
        units: from :func:`units_of`.
        optimizer: torch optimizer (or None) whose moments are reset.
        tau: dormancy threshold on the normalized score (reference: 0).
        period: steps between two recycling passes.
        seed: of the generator drawing re-initialized weights.

    Call :meth:`step` after every optimizer step.  The score is taken on the
    training batch of the period's last step (the reference scores one
    batch at the reset step).
    """

    def __init__(self, units: list[Unit], optimizer=None, tau: float = 0.0,
                 period: int = 100, seed: int = 0) -> None:
        self.units, self.optimizer = units, optimizer
        self.tau, self.period = tau, period
        self.generator = torch.Generator().manual_seed(seed)
        self.scores: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.recycled = 0
        #: units recycled again exactly one period after their last recycling
        self.again_next_period = 0
        self.last: dict[str, torch.Tensor] = {}
        self.handles = [u.bn.register_forward_hook(self._hook(u.name))
                        for u in units]

    def _hook(self, name: str):
        def hook(bn, inputs, output):
            # a training pass of this layer (mmdet's norm_eval=True keeps
            # the BN in eval mode while it trains)
            if is_training_pass(bn):
                with torch.no_grad():
                    # mean |ReLU(y)| per channel over the batch
                    self.scores[name] = output.detach().clamp(min=0).mean(
                        dim=(0, 2, 3)).float()
        return hook

    def step(self) -> int:
        """Count a step; at period ends recycle. Returns units recycled."""
        self.steps += 1
        if self.steps % self.period:
            return 0
        recycled = 0
        for unit in self.units:
            score = self.scores.get(unit.name)
            if score is None:
                continue
            score = score / (score.mean() + 1e-9)
            dormant = score <= self.tau
            if dormant.any():
                self.recycle(unit, dormant)
                recycled += int(dormant.sum())
                last = self.last.setdefault(
                    unit.name, torch.full(dormant.shape, -1,
                                          dtype=torch.long))
                mask = dormant.cpu()
                self.again_next_period += int(
                    (mask & (self.steps - last == self.period)).sum())
                last[mask] = self.steps
        self.recycled += recycled
        self.scores.clear()  # each period scores its own batch
        return recycled

    @torch.no_grad()
    def recycle(self, unit: Unit, mask: torch.Tensor) -> None:
        conv, bn = unit.conv, unit.bn
        fresh = torch.empty(conv.weight.shape)
        gain = nn.init.calculate_gain('relu')
        bound = gain * (6.0 / _fans(fresh)) ** 0.5  # xavier_uniform
        fresh.uniform_(-bound, bound, generator=self.generator)
        conv.weight[mask] = fresh[mask].to(conv.weight)
        touched = [(conv.weight, mask, 0)]
        if conv.bias is not None:
            conv.bias[mask] = 0
            touched.append((conv.bias, mask, 0))
        if bn.affine:
            bn.weight[mask] = 1
            bn.bias[mask] = 0
            touched += [(bn.weight, mask, 0), (bn.bias, mask, 0)]
        if bn.track_running_stats and bn.running_mean is not None:
            bn.running_mean[mask] = 0
            bn.running_var[mask] = 1
        for layer in unit.outgoing:
            layer.weight[:, mask] = 0
            touched.append((layer.weight, mask, 1))
        self._reset_moments(touched)

    def _reset_moments(self, touched) -> None:
        if self.optimizer is None:
            return
        optimizers = getattr(self.optimizer, 'optimizer', self.optimizer)
        for param, mask, dim in touched:
            state = optimizers.state.get(param)
            for value in (state or {}).values():
                if torch.is_tensor(value) and value.shape == param.shape:
                    value.index_fill_(dim, mask.nonzero().flatten(), 0)

    def after_step(self, result=None) -> int:
        """The studies' probe protocol: :meth:`step`."""
        return self.step()

    def close(self) -> dict:
        for handle in self.handles:
            handle.remove()
        return dict(recycled=self.recycled,
                    again_next_period=self.again_next_period)


def _fans(weight: torch.Tensor) -> float:
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    return float(fan_in + fan_out)


def _register_hook():
    """``ReDoHook`` for mmengine's ``custom_hooks`` (research configs import
    this module through ``custom_imports``)."""
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS

    from psbn_mmdet.engine.hooks import optimizer_stepped, runner_model

    @HOOKS.register_module(force=True)
    class ReDoHook(Hook):
        """ReDo in an mmengine run: recycles every ``period`` optimizer
        steps, logs ``train/redo/recycled`` and saves the count in
        checkpoints under ``redo``."""

        priority = 'NORMAL'

        def __init__(self, tau: float = 0.0, period: int = 100,
                     seed: int | None = None) -> None:
            self.tau, self.period, self.seed = tau, period, seed
            self.redo = None

        def before_train(self, runner) -> None:
            model = runner_model(runner)
            seed = self.seed if self.seed is not None else runner.seed
            self.redo = ReDo(units_of(model), runner.optim_wrapper.optimizer,
                             self.tau, self.period, seed)

        def after_train_iter(self, runner, batch_idx, data_batch=None,
                             outputs=None) -> None:
            if optimizer_stepped(runner.optim_wrapper):
                self.redo.step()
            runner.message_hub.update_scalar('train/redo/recycled',
                                             self.redo.recycled)

        def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
            if self.redo is not None:
                checkpoint['redo'] = dict(
                    recycled=self.redo.recycled,
                    again_next_period=self.redo.again_next_period)

    return ReDoHook


ReDoHook = _register_hook()
