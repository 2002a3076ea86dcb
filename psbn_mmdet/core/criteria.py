"""Collapse criteria (Mehta et al. 2019) and per-stage counts.

* parameter criterion: a BN channel whose scale ``|γ| < GAMMA_THRESHOLD``;
* activation criterion: a pre-ReLU channel whose maximum post-ReLU activation
  over a data corpus is below ``ACTIVATION_THRESHOLD``.

Both the training hooks and the report count with these functions, so the
numbers they print mean the same thing.  :func:`channel_max` is the one
per-channel maximum of a batch (the layer's window statistics use it) and
:class:`ChannelMax` the one way to collect it over data with forward hooks
(the report, the studies).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from .roles import STAGES

GAMMA_THRESHOLD = 1e-3
ACTIVATION_THRESHOLD = 1e-12


def collapsed_gamma(weight: torch.Tensor,
                    threshold: float = GAMMA_THRESHOLD) -> torch.Tensor:
    """Bool mask of channels with ``|γ| < threshold``."""
    return weight.detach().abs() < threshold


def dead_activation(max_activation: torch.Tensor,
                    threshold: float = ACTIVATION_THRESHOLD) -> torch.Tensor:
    """Bool mask of channels whose max post-ReLU activation is below threshold.

    ``max_activation`` is the maximum of the BN output before the ReLU; ReLU
    maps it to ``max(0, ·)``, and a NaN maximum counts as not dead.
    """
    return max_activation.detach().clamp(min=0) < threshold


def per_stage(counts: Iterable[tuple[str, int]],
              stages: Iterable[str] = STAGES) -> dict[str, int]:
    """Sum ``(stage, count)`` pairs into ``{stage: total}`` in stage order."""
    totals = dict.fromkeys(stages, 0)
    for stage, count in counts:
        totals[stage] = totals.get(stage, 0) + int(count)
    return totals


# ------------------------------------------------------------ maxima over data
def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def channel_max(output: torch.Tensor, extents=None) -> torch.Tensor:
    """Per-channel maximum of a batch ``(N, C, *spatial)`` (or ``(N, C)``).

    ``extents``, when given, holds per image ``(h, w, H, W)``: the image's own
    size inside the padded ``H x W`` input.  A feature map of ``h_f x w_f`` is
    then cut to ``ceil(h * h_f / H) x ceil(w * w_f / W)``, so batch padding
    never counts.
    """
    if extents is None or all(h == H and w == W for h, w, H, W in extents):
        # contiguous spatial dims first, then the batch dim: on CPU several
        # times faster than one reduction over (0, 2, 3)
        spatial = tuple(range(2, output.dim()))
        per_image = output.amax(dim=spatial) if spatial else output
        return per_image.amax(dim=0)
    h_out, w_out = output.shape[-2:]
    return torch.stack([  # flatten: faster than amax(1, 2)
        output[i, :, :_ceil_div(h * h_out, H),
               :_ceil_div(w * w_out, W)].flatten(1).amax(1)
        for i, (h, w, H, W) in enumerate(extents)]).amax(0)


class ChannelMax:
    """Per-channel output maxima of named modules over every batch run.

    Forward hooks; a context manager that removes them on exit::

        with ChannelMax({'layer1.0.bn1': bn}) as maxima:
            for batch in batches:
                model(batch)
        maxima.maxima['layer1.0.bn1']   # (C,) tensor

    Set ``extents`` before each batch to exclude padding (see
    :func:`channel_max`).
    """

    def __init__(self, modules: Mapping[str, nn.Module]) -> None:
        self.maxima: dict[str, torch.Tensor] = {}
        self.extents: list[tuple[int, int, int, int]] | None = None
        self.handles = [module.register_forward_hook(self._hook(name))
                        for name, module in modules.items()]

    def _hook(self, name: str):
        def hook(module, args, output):
            batch_max = channel_max(output.detach(), self.extents)
            seen = self.maxima.get(name)
            self.maxima[name] = (batch_max if seen is None else
                                 torch.maximum(seen, batch_max))
        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def __enter__(self) -> 'ChannelMax':
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


#: optimizers that scale each entry's step by its own gradient history
#: (adaptive learning rates); with weight decay added to the gradient
#: (coupled L2) the decay of a silent channel is not scaled down with its
#: gradient, the regime that collapses channels (Mehta et al. 2019)
ADAPTIVE_OPTIMIZERS = ('Adam', 'Adamax', 'NAdam', 'RAdam', 'Adagrad',
                       'RMSprop', 'Adadelta')


def collapse_regime(optimizer: torch.optim.Optimizer) -> str | None:
    """``'<Optimizer> with weight_decay=<wd>'`` when ``optimizer`` is a
    known collapse regime (an adaptive optimizer of
    :data:`ADAPTIVE_OPTIMIZERS` whose weight decay is coupled, > 0 in some
    parameter group); None otherwise (SGD, AdamW, decoupled decay)."""
    name = type(optimizer).__name__
    if name not in ADAPTIVE_OPTIMIZERS:
        return None
    decays = [group.get('weight_decay', 0) or 0
              for group in optimizer.param_groups
              if not group.get('decoupled_weight_decay', False)]
    decay = max(decays, default=0)
    return f'{name} with weight_decay={decay:g}' if decay > 0 else None
