"""Collapse criteria (Mehta et al. 2019) and per-stage counts.

* parameter criterion: a BN channel whose scale ``|γ| < GAMMA_THRESHOLD``;
* activation criterion: a pre-ReLU channel whose maximum post-ReLU activation
  over a data corpus is below ``ACTIVATION_THRESHOLD``.

Both the training hooks and the report count with these functions, so the
numbers they print mean the same thing.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

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


def gamma_counts_by_stage(weights: Mapping[str, torch.Tensor],
                          stage_of: Mapping[str, str],
                          threshold: float = GAMMA_THRESHOLD
                          ) -> dict[str, int]:
    """Collapsed-scale channels per stage for ``{bn name: γ}``."""
    return per_stage((stage_of[name], collapsed_gamma(w, threshold).sum())
                     for name, w in weights.items() if name in stage_of)
