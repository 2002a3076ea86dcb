"""The post-shift controller: detect dead channels, shift them, reset optimizer state.

Usable from any PyTorch loop::

    controller = PostShiftController(model, optimizer)
    for batch in loader:
        loss = model(batch); loss.backward()
        optimizer.step(); optimizer.zero_grad()
        controller.step()   # after optimizer.step(): the shift is "post"

Every ``window`` steps of a layer, its window statistics are all-reduced across
ranks (max of y by MAX, x̂ sums by SUM), the dead pre-ReLU channels are found
and psBN layers revive them by their ``revival`` rule
(:mod:`psbn_mmdet.core.revival`): ``'reinit_init'`` and ``'reinit'`` make
each a working unit again where the layer that reads it is known, else (and
for ``'shift'``) the layer post-shifts γ and β
(:meth:`~psbn_mmdet.models.layers.psbn.PostShiftMixin.post_shift_`).  The
optimizer state of the touched entries is reset.  The decision uses reduced
statistics, identical parameters and draws seeded by (seed, step, layer), so
every rank revives the same channels the same way.

With ``shift=False`` (or plain BN layers) the controller only monitors: plain BN
layers get a forward hook that collects the same statistics, so a BN baseline
logs the same dead-channel counts as a psBN run.
"""
from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .criteria import GAMMA_THRESHOLD, collapsed_gamma, per_stage
from .optimizer_state import plain_optimizers, reset_optimizer_state
from .revival import (REINIT_SCALES, applied_rule, check_revival,
                      draw_seed, plan, reinit_, units_of)
from .roles import PRE_RELU, STAGES, roles_from_model, unplaced
from .statistics import (DEFAULT_WINDOW, PostShiftable, WindowStatistics,
                         is_trainable, is_training_pass)

OPTIMIZER_RESETS = ('zero', 'healthy', 'none')


@dataclass
class WindowResult:
    """What one :meth:`PostShiftController.step` decided.

    ``dead`` and ``shifted`` count channels per stage; ``shifted_channels``
    holds, per layer that shifted, the bool mask of its shifted channels;
    ``batches`` how many batches each layer's window saw.
    """
    step: int
    dead: dict[str, int] = field(default_factory=dict)
    shifted: dict[str, int] = field(default_factory=dict)
    shifted_channels: dict[str, torch.Tensor] = field(default_factory=dict)
    #: per stage: the channels of ``shifted`` re-initialized
    reinitialized: dict[str, int] = field(default_factory=dict)
    #: per layer decided on: the training batches its window saw (on every
    #: rank together)
    batches: dict[str, int] = field(default_factory=dict)


def check_options(window: int | None, optimizer_reset: str,
                  revival: str | None = None, shift: bool = True,
                  seed: int | None = 0) -> None:
    """Raise a one-line ``ValueError`` naming a bad controller option."""
    if revival is not None:
        check_revival(revival)
    if optimizer_reset not in OPTIMIZER_RESETS:
        raise ValueError(f'optimizer_reset must be one of '
                         f'{OPTIMIZER_RESETS}, got {optimizer_reset!r}')
    if window is not None and (isinstance(window, bool)
                               or not isinstance(window, int) or window < 1):
        raise ValueError(f'window must be an integer >= 1, got {window!r}')
    if not isinstance(shift, bool):
        raise ValueError(f'shift must be True or False, got {shift!r}')
    if seed is not None and (isinstance(seed, bool)
                             or not isinstance(seed, numbers.Integral)):
        raise ValueError(f'seed must be an integer or None, got {seed!r}')


class PostShiftController:
    """Detects dead pre-ReLU channels and post-shifts psBN layers.

    Args:
        model: the network (a detector, a backbone, any ``nn.Module``).
        optimizer: torch optimizer or mmengine optim wrapper whose state of
            shifted γ/β entries is reset; None to reset nothing.
        shift: False to only monitor (count dead and collapsed channels).
        window: detection window in steps for every layer; None uses each
            psBN layer's own ``window`` (``DEFAULT_WINDOW`` for plain BN).
        optimizer_reset: how shifted entries' optimizer state is reset:
            ``'zero'`` zeroes every moment; ``'healthy'`` zeroes first moments
            and sets second moments to the median of the layer's healthy
            channels, so an adaptive optimizer takes ordinary-sized steps;
            ``'none'`` (default, chosen by docs/collapse_study.md) leaves the
            state alone.  Applies to shifts; a re-initializing revival always
            resets the state of what it changed (first moments 0, second
            moments at the tensor's typical value:
            :func:`~psbn_mmdet.core.optimizer_state.reset_optimizer_state`).
        revival: the revival rule of every psBN layer; None uses each
            layer's ``revival`` from ``norm_cfg``.
        seed: seeds the fresh filters of the re-initializing rules with the
            step and the layer; it must be the same on every rank (mmengine:
            ``randomness.seed``, never the per-rank seed of
            ``diff_rank_seed=True``).
    """

    def __init__(self, model: nn.Module, optimizer=None, shift: bool = True,
                 window: int | None = None, optimizer_reset: str = 'none',
                 gamma_threshold: float = GAMMA_THRESHOLD,
                 revival: str | None = None, seed: int = 0) -> None:
        check_options(window, optimizer_reset, revival, shift, seed)
        self.revival = revival
        self.seed = int(seed)
        #: the readers of each pre-ReLU BN that a re-initializing rule can revive
        self.units = units_of(model)
        self.optimizers = plain_optimizers(optimizer)
        self.shift = shift
        self.window = window
        self.optimizer_reset = optimizer_reset
        self.gamma_threshold = gamma_threshold
        self.roles = roles_from_model(model)
        #: BNs with no ReLU-after-BN structure: monitored never, shifted never
        self.unplaced = unplaced(self.roles)
        self.bns: dict[str, _BatchNorm] = {
            name: module
            for name, module in model.named_modules()
            if isinstance(module, _BatchNorm)
        }
        self.pre_relu = [
            name for name in self.bns if self.roles[name].role == PRE_RELU
        ]
        # ResNet stages first, then 'other' for BNs outside a ResNet
        self.stages = STAGES + tuple(
            sorted({r.stage for r in self.roles.values()} - set(STAGES)))
        self.stats: dict[str, WindowStatistics] = {}
        self._handles = []
        # A post-shifting layer collects statistics only while a controller
        # reads them, and only the pre-ReLU ones are read: the others
        # (pre-add, no role) cost what BN costs.
        self._attached = [bn for bn in self.bns.values()
                          if isinstance(bn, PostShiftable)]
        for bn in self._attached:
            bn.window_stats.attached = True
        for name in self.pre_relu:
            bn = self.bns[name]
            if isinstance(bn, PostShiftable):
                self.stats[name] = bn.window_stats
                self.stats[name].window = self.window_of(name)
                self.stats[name].enabled = True
            else:
                self.stats[name] = WindowStatistics(self.window_of(name))
                self._handles.append(
                    bn.register_forward_hook(self._collect_hook(name)))
        self.steps = 0
        self.last_dead: dict[str, torch.Tensor] = {}
        #: shifts per channel so far, by layer ("recovered")
        self.shift_counts: dict[str, torch.Tensor] = {}
        #: called with every window's :class:`WindowResult` (research
        #: instruments that follow the shifted channels further)
        self.callbacks: list[Callable[[WindowResult], None]] = []
        #: layers whose window a resume cut without its statistics
        self._cut_windows: set[str] = set()
        #: what :meth:`load_state_dict` could not restore, for the log
        self.resume_note: str | None = None

    def _collect_hook(self, name: str):
        stats = self.stats[name]

        def hook(bn, inputs, output):
            if is_training_pass(bn):
                stats.update(bn, inputs[0], output)

        return hook

    def close(self) -> None:
        """Remove the forward hooks placed on plain BN layers and stop the
        statistics of the post-shifting ones (they cost what BN costs
        again)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for bn in self._attached:
            bn.window_stats.enabled = bn.window_stats.attached = False
        self._attached.clear()

    @property
    def shiftable(self) -> list[str]:
        """The pre-ReLU layers this controller can post-shift."""
        return [name for name in self.pre_relu
                if isinstance(self.bns[name], PostShiftable)]

    # ------------------------------------------------------------ decisions
    def revival_of(self, name: str) -> str:
        """The rule layer ``name``'s dead channels get (the controller's
        ``revival``, else the layer's; ``'shift'`` where a re-initializing
        rule has no unit to work on)."""
        return applied_rule(
            self.revival or getattr(self.bns[name], 'revival', 'shift'),
            self.units.get(name))

    def window_of(self, name: str) -> int:
        if self.window is not None:
            return self.window
        return getattr(self.bns[name], 'window', DEFAULT_WINDOW)

    def step(self) -> WindowResult | None:
        """Count one optimizer step; at window ends, detect and shift.

        Returns the window's result when any layer's window ended, else None.
        """
        self.steps += 1
        due = [
            name for name in self.pre_relu
            if self.steps % self.window_of(name) == 0
            and is_trainable(self.bns[name])
        ]
        if not due:
            return None
        self._all_reduce(due)
        result = WindowResult(self.steps)
        dead_pairs, shifted_pairs, reinit_pairs = [], [], []
        for name in due:
            bn, stats = self.bns[name], self.stats[name]
            if name in self._cut_windows:  # resumed without its statistics
                self._cut_windows.discard(name)
                stats.reset()
                continue
            if stats.batches == 0:
                continue
            result.batches[name] = stats.batches
            dead = stats.dead_channels()
            self.last_dead[name] = dead
            dead_pairs.append((self.roles[name].stage, dead.sum()))
            if self.shift and isinstance(bn, PostShiftable):
                reinit, shift = self._plan(name, dead)
                shifted = torch.zeros_like(dead)
                if reinit.any():
                    self._reinit(name, reinit)
                    reinit_pairs.append((self.roles[name].stage,
                                         reinit.sum()))
                    shifted |= reinit
                if shift.any():
                    moved = bn.post_shift_(shift)
                    self._reset_optimizer_state(bn, moved, dead)
                    shifted |= moved
                if shifted.any():
                    self._record_shift(name, shifted)
                    result.shifted_channels[name] = shifted
                    shifted_pairs.append((self.roles[name].stage,
                                          shifted.sum()))
            stats.reset()
        result.dead = per_stage(dead_pairs, self.stages)
        result.shifted = per_stage(shifted_pairs, self.stages)
        result.reinitialized = per_stage(reinit_pairs, self.stages)
        for callback in self.callbacks:
            callback(result)
        return result

    def _plan(self, name: str, dead: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``name``'s channels to re-initialize and to shift
        (:func:`~psbn_mmdet.core.revival.plan`): a re-initializing rule
        also revives the channels silent in the window with a collapsed γ
        (|γ| < ``gamma_threshold``) or an all-zero filter, whose constant
        input the dead criterion does not judge."""
        rule = self.revival_of(name)
        if rule not in REINIT_SCALES:  # the shift: nothing is unfit
            return plan(rule, dead, torch.zeros_like(dead), False)
        bn, unit = self.bns[name], self.units[name]
        collapsed = (collapsed_gamma(bn.weight, self.gamma_threshold)
                     | (unit.conv.weight.detach().flatten(1).abs().amax(1)
                        == 0))
        unfit = self.stats[name].silent_channels() & collapsed.to(
            dead.device)
        return plan(rule, dead, unfit,
                    first_window=self.steps <= self.window_of(name))

    def _reinit(self, name: str, revive: torch.Tensor) -> None:
        """A re-initializing rule on layer ``name``'s ``revive`` channels
        (:func:`reinit_`), the live scale taken from channels that fired in
        the window and are not revived; the optimizer state of every
        changed entry reset (:func:`reset_optimizer_state`)."""
        bn, stats = self.bns[name], self.stats[name]
        live = ~revive & (stats.max > 0)
        generator = torch.Generator().manual_seed(
            draw_seed(self.seed, self.steps, self.pre_relu.index(name)))
        reset_optimizer_state(self.optimizers, reinit_(
            bn, self.units[name], revive, live, generator,
            getattr(bn, 'active_fraction', 0.5),
            REINIT_SCALES[self.revival_of(name)]))

    @staticmethod
    def _distributed() -> bool:
        return (dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1)

    def _all_reduce(self, names: list[str]) -> None:
        """Make every rank's window statistics the global ones.

        Two collectives per window for all due layers: MAX over the maxima;
        SUM over [x̂ mean, x̂ variance, x̂ mean², non-finite count, batches,
        ranks with data].  Over the ranks with data, the pooled variance is
        the mean within-rank variance plus the variance of the rank means.
        """
        if not self._distributed():
            return
        maxes, sums = [], []
        for name in names:
            bn, stats = self.bns[name], self.stats[name]
            c, device = bn.num_features, bn.weight.device
            if stats.max is None:  # no training pass on this rank
                maxes.append(torch.full((c, ), -torch.inf, device=device))
                sums.append(torch.zeros(4 * c + 2, device=device))
            else:
                maxes.append(stats.max)
                sums.append(torch.cat([
                    stats.xhat_mean, stats.xhat_var,
                    stats.xhat_mean.square(), stats.nonfinite,
                    torch.tensor([float(stats.batches), 1.0], device=device)
                ]))
        widths = [self.bns[name].num_features for name in names]
        maxes, sums = torch.cat(maxes), torch.cat(sums)
        dist.all_reduce(maxes, op=dist.ReduceOp.MAX)
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        for name, c, m, s in zip(names, widths, maxes.split(widths),
                                 sums.split([4 * c + 2 for c in widths])):
            stats = self.stats[name]
            ranks = max(s[4 * c + 1].item(), 1.0)
            mean, within, mean_sq = s[:3 * c].view(3, c) / ranks
            stats.max = m
            stats.xhat_mean = mean
            stats.xhat_var = within + (mean_sq - mean.square()).clamp(min=0.0)
            stats.nonfinite = s[3 * c:4 * c]
            stats.batches = int(s[4 * c].item())

    def _reset_optimizer_state(self, bn: _BatchNorm, shifted: torch.Tensor,
                               dead: torch.Tensor) -> None:
        """A shift's ``optimizer_reset`` on γ and β: ``'zero'`` every
        moment, ``'healthy'`` second moments at the median of the layer's
        live channels (:func:`reset_optimizer_state`)."""
        if self.optimizer_reset == 'none' or not shifted.any():
            return
        reset_optimizer_state(
            self.optimizers, [(bn.weight, shifted, 0), (bn.bias, shifted, 0)],
            second='typical' if self.optimizer_reset == 'healthy' else 'zero',
            reference=~dead)

    @torch.no_grad()
    def pending_statistics(self, forward: Callable[[], object]
                           ) -> dict[str, tuple[torch.Tensor, torch.Tensor,
                                                torch.Tensor]]:
        """What the pending recalibrations (:meth:`~psbn_mmdet.models.layers.psbn.PostShiftMixin.recalibrate_`)
        would set, measured on the inputs the layers see in one call of
        ``forward`` (a forward pass of the model, e.g. on the last training
        batch): ``name -> (channels, running_mean, running_var)``.  Changes
        nothing: what a checkpoint saved before the next training batch
        should hold for the revived channels."""
        pending = {name: bn for name, bn in self.bns.items()
                   if getattr(bn, 'pending_recalibration', None) is not None}
        seen: dict[str, torch.Tensor] = {}
        handles = [bn.register_forward_pre_hook(
            lambda module, args, name=name: seen.setdefault(name, args[0]))
            for name, bn in pending.items()]
        try:
            if pending:
                forward()
        finally:
            for handle in handles:
                handle.remove()
        out = {}
        for name, bn in pending.items():
            if name in seen:
                channels = bn.pending_recalibration
                out[name] = (channels, *bn.recalibration_statistics(
                    seen[name], channels, reduce=False))
        return out

    def _record_shift(self, name: str, shifted: torch.Tensor) -> None:
        counts = self.shift_counts.setdefault(
            name, torch.zeros(shifted.numel(), dtype=torch.long))
        counts += shifted.cpu().long()

    # -------------------------------------------------------------- reports
    def collapsed_gamma_by_stage(self) -> dict[str, int]:
        """Channels with |γ| < threshold per stage, over every BN."""
        return per_stage(((self.roles[name].stage,
                           collapsed_gamma(bn.weight,
                                           self.gamma_threshold).sum())
                          for name, bn in self.bns.items() if bn.affine),
                         self.stages)

    def dead_so_far_by_stage(self) -> dict[str, int]:
        """Pre-ReLU channels dead on every training batch of the windows in
        progress so far, per stage, over every rank (a collective: call it
        on every rank).  After the first training batch: the loaded
        checkpoint's dead channels, before any revival."""
        names = [name for name in self.pre_relu
                 if self.stats[name].max is not None]
        if self._distributed():
            maxes = [self.stats[name].max.clone() for name in names]
            for value in maxes:
                dist.all_reduce(value, op=dist.ReduceOp.MAX)
        else:
            maxes = [self.stats[name].max for name in names]
        return per_stage(((self.roles[name].stage, (value <= 0).sum())
                          for name, value in zip(names, maxes)), self.stages)

    def dead_by_stage(self) -> dict[str, int]:
        """Pre-ReLU channels dead in each layer's last completed window."""
        return per_stage(((self.roles[name].stage, dead.sum())
                          for name, dead in self.last_dead.items()),
                         self.stages)

    def recovered_by_stage(self) -> dict[str, int]:
        """Shifts applied so far, per stage (a channel may count repeatedly)."""
        return per_stage(((self.roles[name].stage, counts.sum())
                          for name, counts in self.shift_counts.items()),
                         self.stages)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Steps, shift counts, and the windows in progress (``windows``: a
        checkpoint that cuts a window lets a resumed run decide as the
        uninterrupted one).  A distributed run's windows are spread over its
        ranks while mmengine saves on one: there, ``windows`` is None."""
        windows = None if self._distributed() else {
            name: stats.state_dict() for name, stats in self.stats.items()}
        return dict(
            steps=self.steps,
            shift_counts={k: v.tolist() for k, v in self.shift_counts.items()},
            windows=windows, recalibrations={
                name: bn.pending_recalibration.tolist()
                for name, bn in self.bns.items()
                if getattr(bn, 'pending_recalibration', None) is not None})

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`.

        Without the windows in progress (a distributed run's checkpoint, one
        of an earlier version, or a single process resuming a distributed
        run), the window each layer is in is cut: its decision is skipped,
        and :attr:`resume_note` says so.  Keys earlier versions also saved
        (re-collapse counters) are ignored.
        """
        self.steps = int(state['steps'])
        self.shift_counts = {
            k: torch.tensor(v, dtype=torch.long)
            for k, v in state['shift_counts'].items()
        }
        skipped = 0
        for name, channels in state.get('recalibrations', {}).items():
            recalibrate = getattr(self.bns.get(name), 'recalibrate_', None)
            if recalibrate is not None:
                recalibrate(torch.tensor(channels))
            elif name in self.bns:  # a plain BN (the BN twin of a psBN run)
                skipped += int(sum(channels))
        notes = [] if not skipped else [
            f'{skipped} revived channel(s) of plain BN layers keep the '
            "checkpoint's running statistics (estimated on the saving "
            'iteration\'s batch): only psBN layers recalibrate them on the '
            'next batch']
        windows = state.get('windows')
        if windows is not None and not self._distributed():
            for name, saved in windows.items():
                if name in self.stats:
                    weight = self.bns[name].weight
                    self.stats[name].load_state_dict(
                        saved, None if weight is None else weight.device)
        else:
            self._cut_windows = {name for name in self.pre_relu
                                 if self.steps % self.window_of(name)}
        if self._cut_windows:
            why = ('a distributed run saves none' if 'windows' in state else
                   'the checkpoint has none')
            notes.insert(0, (
                f'resumed at step {self.steps}, inside the detection window '
                f'of {len(self._cut_windows)} layer(s), without that '
                f'window\'s statistics ({why}): their next window-end '
                'decision is skipped'))
        self.resume_note = '; '.join(notes) or None
