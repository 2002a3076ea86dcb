"""Norm variants: BN, psBN as shipped, and the recovery rules it was chosen from.

Earlier x̂ estimates plug into the layer through its public extension point,
``layer.window_stats`` (a :class:`psbn_mmdet.core.WindowStatistics`):

* :class:`AssumedUnitXhatStatistics`: the rule before the study (std(x̂)
  taken as 1 under batch statistics);
* :class:`WindowMeanXhatStatistics`: exact moments averaged over the window.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from psbn_mmdet.core import DEFAULT_WINDOW, WindowStatistics


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
    'shipped': None,  # psbn_mmdet.core.WindowStatistics: exact, last batch
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
    redo: dict | None = None  # ReDo's options (research.redo) on BN: a peer
    controller: dict = field(default_factory=dict)  # more controller options
    # a research.collapse_study.revival.Rule's fields: what else a shift
    # changes (None: nothing; {} measures psBN's own shift bound)
    revival: dict | None = None

    @property
    def period(self) -> int:
        """Steps between two interventions (psBN's window, ReDo's period)."""
        if self.redo is not None:
            return self.redo.get('period', 100)
        return self.options.get('window', DEFAULT_WINDOW)

    def controller_kwargs(self) -> dict:
        if self.optimizer_reset is None:
            return dict(self.controller)
        return dict(self.controller, optimizer_reset=self.optimizer_reset)


#: the layer's defaults when the first study's candidates were measured
FIRST_STUDY_DEFAULTS = dict(window=100, active_fraction=0.01,
                            revival='shift')
#: the options of issue 13's defaults, with the rule they were measured with
RHO50_W10 = dict(window=10, active_fraction=0.5, revival='shift')


def _fixed(label: str, optimizer_reset: str = 'healthy',
           options: dict | None = None) -> Variant:
    """psBN with the last-batch x̂ fix and one more change.  The reset rule
    stays 'healthy', the controller's default when these were measured, and
    the layer options those of then (:data:`FIRST_STUDY_DEFAULTS`)."""
    return Variant(label, True, xhat='exact-last',
                   optimizer_reset=optimizer_reset,
                   options={**FIRST_STUDY_DEFAULTS, **(options or {})})


def _revival(label: str, rule: dict) -> Variant:
    """The shipped defaults (``rho50_w10``'s options) plus a rule."""
    return Variant(label, True, options=RHO50_W10, revival=rule)


VARIANTS = {
    'bn': Variant('BN', False),
    # the rule before this study: measured as "psBN (defaults)" then
    'psbn': Variant('psBN, x̂ std assumed 1, healthy reset (before the study)',
                    True, xhat='assumed-unit', optimizer_reset='healthy',
                    options=FIRST_STUDY_DEFAULTS),
    # the product's defaults, whatever they are (the quick grid, the tests)
    'defaults': Variant('psBN (the defaults)', True),
    # issue 13's rule, options explicit so that records keep their meaning:
    # the defaults since issue 13, and the same rule at window 20
    'rho50_w10': Variant('psBN, window=10, active_fraction=0.5 (the defaults '
                         'since issue 13)', True, options=RHO50_W10),
    'rho50_w20': Variant('psBN, window=20, active_fraction=0.5', True,
                         options=dict(RHO50_W10, window=20)),
    # the defaults chosen by the first study, until issue 13 (its records
    # call it 'shipped'); options explicit, so the name keeps its rule
    'shipped': Variant(
        "psBN, window=100, active_fraction=0.01 (the defaults before "
        "issue 13)", True, options=FIRST_STUDY_DEFAULTS),
    # the first study's best combination (= 'fix_w20_none_rho16')
    'rho16_w20': Variant('psBN, window=20, active_fraction=0.16', True,
                         options=dict(window=20, active_fraction=0.16,
                                      revival='shift')),
    # the peer: ReDo on BN, every 20 steps (psBN's window) and every 100, the
    # reference's threshold tau = 0 (units dead on the scored batch)
    'redo_20': Variant('ReDo (tau 0, period 20) on BN', False,
                       redo=dict(tau=0.0, period=20)),
    'redo': Variant('ReDo (tau 0, period 100) on BN', False,
                    redo=dict(tau=0.0, period=100)),
    # issue 23, step 4: psBN's defaults + a revival rule (revival.Rule)
    # issue 29: the product's 'reinit' revival, window 10, ρ 0.5
    'ps_reinit': Variant("psBN, revival='reinit' (window 10, "
                         'active_fraction 0.5)', True,
                         options=dict(RHO50_W10, revival='reinit')),
    'ps_reinit_init': Variant("psBN, revival='reinit_init' (a fresh unit at "
                              'initialization scale: γ 1, filter norm √2)',
                              True, options=dict(RHO50_W10,
                                                 revival='reinit_init')),
    # issue 38: a fresh unit for what arrives dead, the shift for what dies
    # in training
    'ps_auto': Variant("psBN, revival='auto' (a fresh unit for channels "
                       'dead since training started, the shift for those '
                       'that die later)', True,
                       options=dict(RHO50_W10, revival='auto')),
    'ps_keep': _revival('psBN defaults (rule: nothing more; measures the '
                        'shift bound)', {}),
    'ps_rescale': _revival('psBN + incoming filter rescaled to the live '
                           'median norm', dict(filter='rescale')),
    'ps_rescale_gamma': _revival(
        'psBN + filter rescaled + |γ| floor at the live median |γ|',
        dict(filter='rescale', gamma='live')),
    'ps_fresh': _revival('psBN + fresh random filter at the live median '
                         'norm', dict(filter='fresh')),
    'ps_rescale_gamma_out25': _revival(
        'psBN + filter rescaled + live |γ| + outgoing raised to 0.25 x the '
        'live median', dict(filter='rescale', gamma='live', outgoing=0.25)),
    'fix_window_mean': Variant('psBN, exact x̂ std, window mean', True,
                               xhat='exact-window',
                               optimizer_reset='healthy',
                               options=FIRST_STUDY_DEFAULTS),
    'fix': _fixed('psBN, exact x̂ std, last batch ("fix")'),
    'fix_reset_zero': _fixed("fix + optimizer_reset='zero'",
                             optimizer_reset='zero'),
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
