"""Step 3 of issue 23: what a revived channel's weights and gradients do after
its shift.

A probe of :func:`research.collapse_study.training.run` (``--trace``).  It
follows every channel the controller shifted (psBN) or found dead in a window
(BN, where nothing is shifted) through the controller's public ``callbacks``,
and every ``every`` optimizer steps (mid-window, so that a shift is never on
a sampled step) measures, per layer of :func:`research.redo.units_of`, each
channel's

* incoming conv filter norm ``‖W_conv[c]‖``, outgoing weight norm
  ``‖W_next[:, c]‖`` (the next conv's input slice, or the FC column), ``|γ|``;
* loss-gradient magnitudes ``|∂L/∂γ|``, ``|∂L/∂β|``, ``‖∂L/∂W_conv[c]‖``,
  ``‖∂L/∂W_next[:, c]‖`` (``.grad`` after the step: the loss's gradient of
  this step's batch; coupled L2 is added inside the optimizer, not there);

each divided by the median over the layer's *live* channels (alive in the
last window, never followed).  A followed channel's ratios are pooled by the
steps since its latest shift (bins :data:`BINS`) into medians; the record
also keeps the same ratios at the shift itself (the dying channel's state,
read in the callback before the step's sample), the followed channels'
share of the summed squared filter gradient against their share of the
channels, and a coarse time series (median ratios of the followed channels
alive at each sample, every ``series_every`` steps).

Reads parameters and gradients only; changes nothing.
"""
from __future__ import annotations

import statistics
from collections import defaultdict

import torch

from research.redo import units_of

#: steps since the channel's latest shift: [lo, hi) bins of the pooled ratios
BINS = ((0, 10), (10, 50), (50, 200), (200, 10**9))
QUANTITIES = ('filter', 'outgoing', 'gamma', 'grad_gamma', 'grad_beta',
              'grad_filter', 'grad_outgoing')


def _bin(steps: int) -> str:
    for lo, hi in BINS:
        if lo <= steps < hi:
            return f'{lo}-{hi}' if hi < 10**9 else f'{lo}+'
    raise ValueError(steps)


def _out_slice(layer: torch.Tensor) -> torch.Tensor:
    """Per input channel c, the norm of ``layer[:, c]`` (conv or linear)."""
    return layer.detach().transpose(0, 1).flatten(1).norm(dim=1)


@torch.no_grad()
def channel_quantities(unit) -> dict[str, torch.Tensor]:
    """Per channel of ``unit`` (a :class:`research.redo.Unit`): the
    :data:`QUANTITIES` (gradients NaN where the step left none)."""
    conv, bn, out = unit.conv, unit.bn, unit.outgoing[0]
    c = bn.num_features

    def grad(param, reduce):
        return (reduce(param.grad) if param.grad is not None else
                torch.full((c, ), float('nan')))

    return dict(
        filter=conv.weight.detach().flatten(1).norm(dim=1),
        outgoing=_out_slice(out.weight),
        gamma=bn.weight.detach().abs(),
        grad_gamma=grad(bn.weight, lambda g: g.abs()),
        grad_beta=grad(bn.bias, lambda g: g.abs()),
        grad_filter=grad(conv.weight, lambda g: g.flatten(1).norm(dim=1)),
        grad_outgoing=grad(out.weight, _out_slice))


def _median(values: list[float]):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else None


class RevivedTrace:
    """The probe; ``every``: steps between samples (offset ``every // 2``
    so that a sample falls mid-window)."""

    def __init__(self, model, optimizer, controller, every: int = 10,
                 series_every: int = 150) -> None:
        self.controller = controller
        self.units = {u.name: u for u in units_of(model)
                      if u.name in controller.pre_relu}
        self.every, self.series_every = every, series_every
        self.last_shift: dict[str, torch.Tensor] = {
            n: torch.full((u.bn.num_features, ), -1, dtype=torch.long)
            for n, u in self.units.items()}
        self.binned = defaultdict(lambda: defaultdict(list))
        self.at_shift = defaultdict(list)
        self.series = []
        self.share = []  # [followed share of filter grad², of channels]
        self.steps = 0
        self.shifting = bool(controller.shift)
        controller.callbacks.append(self._on_window)

    def _live(self, name: str) -> torch.Tensor:
        dead = self.controller.last_dead.get(name)
        live = self.last_shift[name] < 0
        if dead is not None:
            live &= ~dead.cpu()
        return live

    def _on_window(self, result) -> None:
        """Mark followed channels: shifted ones (psBN), else dead ones."""
        if self.shifting:
            marked = result.shifted_channels
        else:
            marked = {n: self.controller.last_dead[n]
                      for n in self.units if n in self.controller.last_dead}
        for name, mask in marked.items():
            if name not in self.units or not mask.any():
                continue
            mask = mask.cpu()
            if self.shifting:
                # the shifted channel's weights as it died (the post-shift
                # changed only its γ and β)
                q = channel_quantities(self.units[name])
                live = self._live(name)
                if live.any():
                    for key in ('filter', 'outgoing'):
                        ref = float(q[key][live].median())
                        self.at_shift[key] += (q[key][mask] / ref).tolist()
            self.last_shift[name][mask] = result.step

    def after_step(self, result) -> bool:
        self.steps += 1
        if self.steps % self.every != self.every // 2:
            return False
        followed_sq = total_sq = 0.0
        followed_n = total_n = 0
        now = defaultdict(list)
        for name, unit in self.units.items():
            q = channel_quantities(unit)
            live = self._live(name)
            followed = self.last_shift[name] >= 0
            if not live.any():
                continue
            g2 = q['grad_filter'].nan_to_num().square()
            followed_sq += float(g2[followed].sum())
            total_sq += float(g2.sum())
            followed_n += int(followed.sum())
            total_n += followed.numel()
            if not followed.any():
                continue
            since = self.steps - self.last_shift[name][followed]
            for key in QUANTITIES:
                ref = float(q[key][live].nan_to_num().median())
                ratios = (q[key][followed] / ref if ref > 0 else
                          torch.full_like(q[key][followed], float('nan')))
                for s, r in zip(since.tolist(), ratios.tolist()):
                    self.binned[_bin(s)][key].append(r)
                now[key] += ratios.tolist()
        if total_sq > 0 and total_n:
            self.share.append([followed_sq / total_sq, followed_n / total_n])
        if self.steps // self.every % (self.series_every // self.every) == 0 \
                and now:
            self.series.append(dict(step=self.steps, followed=len(
                now['filter']), **{k: _median(v) for k, v in now.items()}))
        return False

    def close(self) -> dict:
        if self._on_window in self.controller.callbacks:
            self.controller.callbacks.remove(self._on_window)
        bins = {b: dict(samples=len(v['filter']),
                        **{k: _median(v[k]) for k in QUANTITIES})
                for b, v in sorted(self.binned.items(),
                                   key=lambda kv: int(kv[0].split('-')[0]
                                                      .rstrip('+')))}
        late = self.share[len(self.share) // 2:]
        return dict(
            kind='trace',
            followed='shifted' if self.shifting else 'dead in a window',
            followed_channels=sum(int((s >= 0).sum())
                                  for s in self.last_shift.values()),
            by_steps_since_shift=bins,
            at_shift={k: _median(v) for k, v in self.at_shift.items()},
            at_shift_count=len(self.at_shift.get('filter', [])),
            # second half of training: followed channels' share of the
            # summed squared filter gradient, and of the channels
            grad_share=(statistics.fmean(s[0] for s in late) if late else
                        None),
            channel_share=(statistics.fmean(s[1] for s in late) if late
                           else None),
            series=self.series)
