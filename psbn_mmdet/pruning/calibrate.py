"""What the calibration images show of each block-internal channel, on every
position the network computes.

A channel can only be removed exactly where it is exactly 0 (dead) or
exactly foldable (constant) wherever the network computes on it, and that
includes the padding: images are padded to a multiple of 32 and to the
largest image of their batch, and a channel dead on the images' own pixels
may be active there (issue 21: an R50 at mmdet's 1333x800 scale).  So the
extremes are taken over whole padded tensors, and over the batch
compositions that bound what the pipeline produces (:func:`compositions`):
each image alone (the least padding), the batches as the tool forms them,
and every image padded to the largest batch of the set (the most).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from ..analysis.probe import ActivationProbe
from ..core.criteria import ACTIVATION_THRESHOLD, dead_activation


@dataclass
class Calibration:
    """Per block-internal BN (backbone module names): the minimum and
    maximum of its output ``y`` per channel, and the largest magnitude of
    the conv it feeds, over every position computed on the images."""
    minima: dict[str, torch.Tensor] = field(default_factory=dict)
    maxima: dict[str, torch.Tensor] = field(default_factory=dict)
    next_scale: dict[str, float] = field(default_factory=dict)
    images: int = 0  # images seen, summed over the compositions
    shape: tuple[int, int, int] | None = None  # (C, H, W) of the first batch

    def dead(self, threshold: float = ACTIVATION_THRESHOLD
             ) -> dict[str, torch.Tensor]:
        """Channels whose output never passes ``threshold`` after the ReLU."""
        return {name: dead_activation(value, threshold)
                for name, value in self.maxima.items()}

    def deviation(self, name: str, constant: torch.Tensor) -> torch.Tensor:
        """The largest distance of the channels' ReLU outputs from
        ``constant`` (per channel)."""
        low = self.minima[name].clamp(min=0)
        high = self.maxima[name].clamp(min=0)
        return torch.maximum((high - constant).abs(), (low - constant).abs())


def pad_batch(inputs: torch.Tensor, samples: list, shape: tuple[int, int],
              value: float = 0.0) -> tuple[torch.Tensor, list]:
    """The batch padded on the right and bottom to ``shape`` (H, W), as the
    data preprocessor pads a batch to its largest image."""
    H, W = shape
    padded = F.pad(inputs, (0, W - inputs.shape[-1], 0, H - inputs.shape[-2]),
                   value=value)
    samples = copy.deepcopy(samples)
    for sample in samples:
        sample.set_metainfo(dict(batch_input_shape=(H, W), pad_shape=(H, W)))
    return padded, samples


def compositions(probe: ActivationProbe) -> Iterator[tuple[torch.Tensor,
                                                           list]]:
    """The calibration images in the batches that bound what the pipeline
    produces: each image alone, as the probe batches them (when it batches
    several), and every batch padded to the largest batch shape of the
    set.  Preprocessed as at inference: ``(inputs, data_samples)``."""
    largest = (0, 0)
    for inputs, samples in probe.batches(batch_size=1):
        largest = tuple(map(max, largest, inputs.shape[-2:]))
        yield inputs, samples
    if probe.batch_size > 1:
        for inputs, samples in probe.batches():
            largest = tuple(map(max, largest, inputs.shape[-2:]))
            yield inputs, samples
    value = float(getattr(probe.preprocessor, 'pad_value', 0))
    for inputs, samples in probe.batches():
        yield pad_batch(inputs, samples, largest, value)


def calibrate(backbone: nn.Module, positions: Iterable, batches
              ) -> Calibration:
    """Run ``backbone`` over ``batches`` (``(inputs, data_samples)``) and
    collect :class:`Calibration` for ``positions``
    (:class:`~psbn_mmdet.pruning.plan.InternalBN`)."""
    result = Calibration()
    handles = []

    def keep(store: dict, name: str, value: torch.Tensor, op) -> None:
        store[name] = value if name not in store else op(store[name], value)

    def bn_hook(name):
        def hook(module, args, output):
            y = output.detach().transpose(0, 1).flatten(1).float()
            keep(result.minima, name, y.amin(1), torch.minimum)
            keep(result.maxima, name, y.amax(1), torch.maximum)
        return hook

    def conv_hook(name):
        def hook(module, args, output):
            scale = float(output.detach().abs().max())
            result.next_scale[name] = max(result.next_scale.get(name, 0.0),
                                          scale)
        return hook

    for position in positions:
        handles.append(backbone.get_submodule(position.name)
                       .register_forward_hook(bn_hook(position.name)))
        handles.append(backbone.get_submodule(position.next_conv)
                       .register_forward_hook(conv_hook(position.name)))
    try:
        with torch.inference_mode():
            for inputs, samples in batches:
                backbone(inputs)
                result.images += len(samples)
                result.shape = result.shape or tuple(inputs.shape[1:])
    finally:
        for handle in handles:
            handle.remove()
    return result

