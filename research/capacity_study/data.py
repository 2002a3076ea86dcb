"""Harder classification tasks than digits, generated, no download.

* ``shapes16``: 16 classes, a shape (disk, square, triangle, cross) filled
  with a texture (horizontal stripes, vertical stripes, checkerboard,
  concentric rings) on a background of another random texture, with random
  position, size, rotation, texture frequency, phase, contrast and
  brightness, and pixel noise.  The class is the (shape, texture) pair: a
  network needs both the shape's outline, which only a texture or brightness
  change shows, and the texture inside it.
* ``hard_digits``: scikit-learn's digits under random affine jitter
  (rotation, scale, shear, translation), with fragments of other digits as
  clutter and pixel noise; train images from the collapse study's training
  digits, test images from its test digits.

Images are rendered analytically in [-1, 1]² at twice the requested size and
average-pooled (anti-aliasing), so any size renders the same task.  Every
sample is drawn from a fixed seed (train and test from different ones):
the data sets are deterministic, the same for every run.  Standardized with
the training split's mean and std, as :mod:`research.collapse_study.data`.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from research.collapse_study.data import Digits, load_digits

TRAIN_SEED, TEST_SEED = 1, 2
TRAIN_SIZE, TEST_SIZE = 6000, 4000
SUPERSAMPLE = 2

SHAPES = ('disk', 'square', 'triangle', 'cross')
TEXTURES = ('h-stripes', 'v-stripes', 'checker', 'rings')


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of a ``size``² image spanning [-1, 1]²."""
    ticks = ((np.arange(size) + 0.5) / size * 2 - 1).astype(np.float32)
    y, x = np.meshgrid(ticks, ticks, indexing='ij')
    return x[None], y[None]  # (1, size, size), broadcast over the batch


def _col(values: np.ndarray) -> np.ndarray:
    """Per-sample values as ``(N, 1, 1)`` float32 (bools stay bools)."""
    values = np.asarray(values)
    if values.dtype != bool:
        values = values.astype(np.float32)
    return values[:, None, None]


def _shape_mask(shape: np.ndarray, u: np.ndarray, v: np.ndarray,
                radius: np.ndarray) -> np.ndarray:
    """Inside-masks of the shapes, ``u, v``: coordinates in each shape's
    rotated frame about its centre."""
    r = _col(radius)
    masks = {
        'disk': u**2 + v**2 < r**2,
        'square': np.maximum(np.abs(u), np.abs(v)) < 0.8 * r,
        'cross': (((np.abs(u) < 0.32 * r) & (np.abs(v) < r))
                  | ((np.abs(v) < 0.32 * r) & (np.abs(u) < r))),
    }
    triangle = np.ones_like(u, dtype=bool)
    for k in range(3):  # equilateral: three half-planes, inradius r / 2
        angle = np.pi / 2 + k * 2 * np.pi / 3
        triangle &= u * np.cos(angle) + v * np.sin(angle) < 0.55 * r
    masks['triangle'] = triangle
    out = np.zeros_like(u, dtype=bool)
    for index, name in enumerate(SHAPES):
        pick = _col(shape == index)
        out |= pick & masks[name]
    return out


def _texture(kind: np.ndarray, x: np.ndarray, y: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
    """Textures in [-1, 1] of each sample's ``kind`` (an index of
    :data:`TEXTURES`), random frequency, phase, small orientation jitter."""
    n = len(kind)
    freq = _col(rng.uniform(1.4, 2.4, n)) * np.pi  # 2.8-4.8 periods across
    angle = _col(rng.uniform(-0.25, 0.25, n))
    phase = _col(rng.uniform(0, 2 * np.pi, n))
    centre = rng.uniform(-0.5, 0.5, (2, n))
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    waves = {
        'h-stripes': np.cos(freq * v + phase),
        'v-stripes': np.cos(freq * u + phase),
        'checker': np.cos(freq * u + phase) * np.cos(freq * v),
        'rings': np.cos(freq * np.hypot(x - _col(centre[0]),
                                        y - _col(centre[1])) + phase),
    }
    out = np.zeros(np.broadcast_shapes(x.shape, (n, 1, 1)), np.float32)
    for index, name in enumerate(TEXTURES):
        out = np.where(_col(kind == index), waves[name], out)
    return out


def render_shapes(labels: np.ndarray, size: int, rng: np.random.Generator,
                  noise: float = 0.2) -> np.ndarray:
    """Images ``(N, size, size)`` of the ``shapes16`` classes ``labels``
    (class = shape index × 4 + texture index)."""
    n = len(labels)
    shape, texture = labels // len(TEXTURES), labels % len(TEXTURES)
    x, y = _grid(size * SUPERSAMPLE)
    centre = rng.uniform(-0.3, 0.3, (2, n))
    radius = rng.uniform(0.45, 0.7, n)
    rotation = _col(rng.uniform(0, 2 * np.pi, n))
    dx, dy = x - _col(centre[0]), y - _col(centre[1])
    u = dx * np.cos(rotation) + dy * np.sin(rotation)
    v = -dx * np.sin(rotation) + dy * np.cos(rotation)
    inside = _shape_mask(shape, u, v, radius)
    # the background: any texture, the shape's own included, at a contrast
    # from faint to the foreground's
    background_kind = rng.integers(0, len(TEXTURES), n)
    fg = (_col(rng.uniform(0.5, 1.0, n)) * _texture(texture, x, y, rng)
          + _col(rng.uniform(-0.3, 0.3, n)))
    bg = (_col(rng.uniform(0.1, 0.7, n)) * _texture(background_kind, x, y, rng)
          + _col(rng.uniform(-0.3, 0.3, n)))
    images = np.where(inside, fg, bg)
    images = images.reshape(n, size, SUPERSAMPLE, size,
                            SUPERSAMPLE).mean(axis=(2, 4))
    return images + noise * rng.standard_normal(images.shape)


def _standardized(train: np.ndarray, train_y: np.ndarray, test: np.ndarray,
                  test_y: np.ndarray) -> Digits:
    mean, std = train.mean(), train.std()

    def tensor(images):
        return torch.tensor((images - mean) / std,
                            dtype=torch.float32).unsqueeze(1)

    return Digits(tensor(train), torch.tensor(train_y, dtype=torch.long),
                  tensor(test), torch.tensor(test_y, dtype=torch.long))


@functools.lru_cache(maxsize=2)
def load_shapes16(size: int) -> Digits:
    """The ``shapes16`` task at ``size``² pixels (balanced classes)."""
    classes = len(SHAPES) * len(TEXTURES)
    splits = []
    for seed, count in ((TRAIN_SEED, TRAIN_SIZE), (TEST_SEED, TEST_SIZE)):
        rng = np.random.default_rng(seed)
        labels = rng.permutation(np.arange(count) % classes)
        splits += [render_shapes(labels, size, rng), labels]
    return _standardized(*splits)


def _affine_digits(images: torch.Tensor, count: int, size: int,
                   rng: np.random.Generator,
                   noise: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """``count`` draws of ``images`` (N, 1, 8, 8) in [0, 1] under random
    affine jitter, each with two fragments of other digits and noise."""
    n = len(images)
    pick = rng.integers(0, n, count)
    angle = rng.uniform(-0.45, 0.45, count)
    scale = rng.uniform(0.75, 1.15, count)
    shear = rng.uniform(-0.3, 0.3, count)
    shift = rng.uniform(-0.25, 0.25, (2, count))
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    theta = np.stack([np.stack([cos, -sin + shear, shift[0]], 1),
                      np.stack([sin, cos, shift[1]], 1)], 1)
    big = size * SUPERSAMPLE

    def warp(source, matrices):
        grid = nn.functional.affine_grid(
            torch.tensor(matrices, dtype=torch.float32),
            (len(source), 1, big, big), align_corners=False)
        return nn.functional.grid_sample(source, grid, align_corners=False)

    out = warp(images[pick], theta)
    for _ in range(2):  # clutter: a third of another digit, shifted far
        other = rng.integers(0, n, count)
        fragment = np.zeros((count, 2, 3))
        fragment[:, 0, 0] = fragment[:, 1, 1] = 1 / rng.uniform(0.7, 1.0,
                                                                 count)
        fragment[:, :, 2] = rng.choice([-1, 1], (count, 2)) * rng.uniform(
            0.6, 0.9, (count, 2))
        out = torch.maximum(out, rng.uniform(0.4, 1.0) * warp(
            images[other], fragment))
    out = nn.functional.avg_pool2d(out, SUPERSAMPLE)[:, 0].numpy()
    return out + noise * rng.standard_normal(out.shape), pick


@functools.lru_cache(maxsize=2)
def load_hard_digits(size: int) -> Digits:
    """The ``hard_digits`` task at ``size``² pixels."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    from research.collapse_study.data import SPLIT_SEED, TEST_FRACTION
    data = sklearn_digits()
    images = torch.tensor(data.images / 16.0, dtype=torch.float32)[:, None]
    train_idx, test_idx = train_test_split(
        np.arange(len(data.target)), test_size=TEST_FRACTION,
        random_state=SPLIT_SEED, stratify=data.target)
    splits = []
    for seed, count, idx in ((TRAIN_SEED, TRAIN_SIZE, train_idx),
                             (TEST_SEED, TEST_SIZE, test_idx)):
        rng = np.random.default_rng(seed)
        rendered, pick = _affine_digits(images[idx], count, size, rng)
        splits += [rendered, data.target[idx][pick]]
    return _standardized(*splits)


#: task name -> loader(size) (:func:`load_dataset`)
TASKS = {'shapes16': load_shapes16, 'hard_digits': load_hard_digits}


def load_dataset(name: str, size: int) -> Digits:
    """The data set ``name`` at ``size``² pixels: ``'digits'``
    (:mod:`research.collapse_study.data`) or a task of :data:`TASKS`."""
    if name == 'digits':
        return load_digits(size)
    if name not in TASKS:
        raise ValueError(f'unknown data set {name!r}')
    return TASKS[name](size)
