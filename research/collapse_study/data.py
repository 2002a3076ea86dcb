"""The study's data: scikit-learn's digits, shipped with scikit-learn.

1797 8×8 grey images of 10 digits, upsampled, split 80/20 stratified with a
fixed seed, standardized with the training split's mean and std.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

SPLIT_SEED = 0
TEST_FRACTION = 0.2


@dataclass
class Digits:
    """A classification data set: images ``(N, 1, size, size)``, labels."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def num_classes(self) -> int:
        return int(self.train_y.max()) + 1


@functools.lru_cache(maxsize=2)
def load_digits(size: int) -> Digits:
    """scikit-learn's digits, upsampled to ``size``², standardized on train."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split
    data = sklearn_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1)
    images = nn.functional.interpolate(images, size=(size, size),
                                       mode='bilinear', align_corners=False)
    labels = torch.tensor(data.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        range(len(labels)), test_size=TEST_FRACTION, random_state=SPLIT_SEED,
        stratify=data.target)
    train_idx, test_idx = torch.tensor(train_idx), torch.tensor(test_idx)
    mean, std = images[train_idx].mean(), images[train_idx].std()
    images = (images - mean) / std
    return Digits(images[train_idx], labels[train_idx], images[test_idx],
                  labels[test_idx])

