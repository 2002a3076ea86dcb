"""The textured task: a harder generated detection data set (issue 23).

:func:`psbn_mmdet.demo.data.make_demo_data` with ``task='textured'`` draws
images with this module.  A class is a shape filled with a texture
(:data:`TEXTURED_CLASSES`: 5 shapes × 4 textures = 20 classes), and the
colours are random, so neither colour nor texture nor outline alone names a
class.  Compared with the demo's 5 coloured shapes, the task also has

* clutter: textured long ellipses, Ls and thin bars that are not annotated (the detector has to
  learn what is *not* an object), ``clutter`` of them at most per image;
* smaller objects: half of them in COCO's small range, down to 10 × 10 px
  (``small=False`` draws none: medium and large ones only, in the default's
  proportions);
* touching objects (``touching=True``): an object is often placed right next
  to an earlier one; objects never share a pixel, so every annotation's
  polygon is exactly what was drawn;
* two appearance domains with the same classes, for a transfer finetune
  (pretrain on ``'source'``, finetune on ``'target'``): the source has
  saturated objects with *dark* texture lines on plain muted backgrounds; the
  target has pale objects with *light* texture lines, a warm tint, faint
  textures in the background, stronger noise and more clutter.

``classes`` restricts the task to some of :data:`TEXTURED_CLASSES` (an
easier task, issue 38): the objects are drawn from those alone, and their
indices are into ``classes``.

Output is a function of the parameters alone (a numpy ``Generator`` per
image, seeded by the caller).
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ('circle', 'square', 'triangle', 'star', 'cross')
TEXTURES = ('solid', 'stripes', 'checker', 'rings')
#: ``<texture>_<shape>``, shape-major: index = 4 * shape + texture
TEXTURED_CLASSES = tuple(f'{texture}_{shape}' for shape in SHAPES
                         for texture in TEXTURES)
DOMAINS = ('source', 'target')
DISTRACTORS = ('ellipse', 'ell', 'bar')  # clutter: no class has these shapes

# Polygon-area ranges per COCO size class: more and smaller small objects
# than the demo's (14² - 28²).
SIZE_AREA_RANGES = ((10**2, 28**2), (34**2, 80**2), (100**2, 120**2))
SIZE_PROBABILITIES = (0.5, 0.4, 0.1)
OBJECTS_PER_IMAGE = (2, 8)  # attempts per image, inclusive
BORDER = 2  # px kept free along the image edges (and around objects
#            when they may not touch)
PLACEMENT_TRIES = 30
TOUCH_PROBABILITY = 0.5  # of placing an object next to an earlier one


@dataclass(frozen=True)
class Appearance:
    """How a domain draws its images."""
    saturation: tuple[float, float]  # of an object's first colour (HSV)
    value: tuple[float, float]
    #: the texture's second colour: the first moved this far towards black
    #: (``dark=True``) or white
    contrast: tuple[float, float]
    dark: bool
    tint: tuple[float, float, float]  # added to the background (RGB)
    background_texture: tuple[float, float]  # its contrast (grey levels)
    noise: float  # σ of the Gaussian pixel noise
    clutter: int  # default of the most distractors per image


APPEARANCES = {
    'source': Appearance(saturation=(0.6, 1.0), value=(0.75, 1.0),
                         contrast=(0.55, 0.8), dark=True, tint=(0, 0, 0),
                         background_texture=(0, 0), noise=6.0, clutter=2),
    'target': Appearance(saturation=(0.15, 0.45), value=(0.5, 0.8),
                         contrast=(0.45, 0.7), dark=False,
                         tint=(22, 6, -18), background_texture=(10, 28),
                         noise=10.0, clutter=4),
}


def draw_textured(rng: np.random.Generator, image_size: tuple[int, int],
                  domain: str, clutter: int, touching: bool,
                  classes: tuple[str, ...] | None = None, small: bool = True
                  ) -> tuple[Image.Image, list[tuple[int, np.ndarray]]]:
    """One image of ``domain`` and its ``(category_index, polygon)`` objects
    (indices into ``classes``, default :data:`TEXTURED_CLASSES`);
    ``clutter`` is the most unannotated distractors drawn; ``small=False``
    draws no object (nor distractor) in COCO's small range."""
    look = APPEARANCES[domain]
    width, height = image_size
    pixels = background(rng, image_size, look)
    occupied = np.zeros((height, width), dtype=bool)
    anchors: list[tuple[float, float, float]] = []  # centre x, y, radius
    objects = []
    low, high = OBJECTS_PER_IMAGE
    sizes = SIZE_PROBABILITIES if small else _without_small()
    for _ in range(int(rng.integers(low, high + 1))):
        if classes is None:  # the default task's draws, as they always were
            index = int(rng.integers(len(TEXTURED_CLASSES)))
            shape, texture = divmod(index, len(TEXTURES))
        else:
            index = int(rng.integers(len(classes)))
            shape, texture = divmod(TEXTURED_CLASSES.index(classes[index]),
                                    len(TEXTURES))
        placed = _place(rng, unit_shape(rng, SHAPES[shape]), image_size,
                        occupied, anchors, touching, sizes)
        if placed is None:
            continue
        polygon, mask = placed
        _paint(rng, pixels, polygon, mask, TEXTURES[texture], look)
        objects.append((index, polygon))
    for _ in range(int(rng.integers(0, clutter + 1))):
        placed = _place(rng, distractor(rng), image_size, occupied, anchors,
                        touching, sizes)
        if placed is not None:
            polygon, mask = placed
            _paint(rng, pixels, polygon, mask,
                   TEXTURES[int(rng.integers(len(TEXTURES)))], look)
    pixels += rng.normal(0, look.noise, size=pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8)), objects


def _without_small() -> tuple[float, ...]:
    """:data:`SIZE_PROBABILITIES` with the small class's share moved to the
    others, in proportion."""
    rest = sum(SIZE_PROBABILITIES[1:])
    return (0.0, *(p / rest for p in SIZE_PROBABILITIES[1:]))


def background(rng: np.random.Generator, image_size: tuple[int, int],
               look: Appearance) -> np.ndarray:
    """Smooth muted blotches, a few grey lines, the domain's tint and faint
    texture: ``(height, width, 3)`` float32."""
    width, height = image_size
    grey = rng.uniform(70, 180, size=(4, 5, 1))
    tint = rng.uniform(-15, 15, size=(4, 5, 3))
    coarse = (grey + tint).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(coarse).resize(image_size,
                                           Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(3, 9)):
        ends = rng.uniform(0, 1, size=4) * [width, height, width, height]
        shade = int(rng.integers(50, 200))
        draw.line(ends.tolist(), fill=(shade, shade, shade),
                  width=int(rng.integers(1, 4)))
    pixels = np.asarray(image, dtype=np.float32) + np.array(look.tint,
                                                            np.float32)
    low, high = look.background_texture
    if high > 0:
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        centre = rng.uniform(0, 1, size=2) * [width, height]
        pattern = texture_mask(
            TEXTURES[int(rng.integers(1, len(TEXTURES)))],
            *_local(rng, xs - centre[0], ys - centre[1]),
            period=float(rng.uniform(4, 10)))
        pixels += (pattern[..., None] - 0.5) * float(rng.uniform(low, high))
    return pixels


def unit_shape(rng: np.random.Generator, name: str) -> np.ndarray:
    """Vertices ``(N, 2)`` of a randomly rotated shape of about unit radius."""
    if name == 'circle':
        angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        points = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    elif name in ('square', 'triangle'):
        corners = 4 if name == 'square' else 3
        angles = np.arange(corners) * 2 * np.pi / corners
        points = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    elif name == 'star':
        angles = np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        points = radii[:, None] * np.stack([np.cos(angles), np.sin(angles)],
                                           axis=1)
    elif name == 'cross':
        a, b = 0.38, 1.0  # arm half-width, arm length
        points = np.array([(a, b), (-a, b), (-a, a), (-b, a), (-b, -a),
                           (-a, -a), (-a, -b), (a, -b), (a, -a), (b, -a),
                           (b, a), (a, a)], dtype=float)
    else:
        raise ValueError(f'no shape {name!r}; shapes: {", ".join(SHAPES)}')
    return _rotate(rng, points)


def distractor(rng: np.random.Generator) -> np.ndarray:
    """A clutter shape, unlike every class shape: a long ellipse, an L or a
    thin bar, randomly rotated, of about unit radius."""
    kind = DISTRACTORS[int(rng.integers(len(DISTRACTORS)))]
    if kind == 'ellipse':
        angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        minor = rng.uniform(0.3, 0.5)
        points = np.stack([np.cos(angles), minor * np.sin(angles)], axis=1)
    elif kind == 'ell':
        a = rng.uniform(0.3, 0.45)  # arm thickness
        points = np.array([(-1, -1), (1, -1), (1, -1 + a), (-1 + a, -1 + a),
                           (-1 + a, 1), (-1, 1)], dtype=float) * 0.75
    else:  # a thin bar
        half = rng.uniform(0.15, 0.3)
        points = np.array([(-1, -half), (1, -half), (1, half), (-1, half)])
    return _rotate(rng, points)


def texture_mask(texture: str, u: np.ndarray, v: np.ndarray,
                 period: float) -> np.ndarray:
    """Where a texture takes its second colour (float 0/1), at the local
    coordinates ``u, v`` (pixels from the texture's centre, rotated)."""
    phase = 2 * np.pi / period
    if texture == 'solid':
        return np.zeros_like(u)
    if texture == 'stripes':
        return (np.sin(phase * u) < 0).astype(np.float32)
    if texture == 'checker':
        return (np.sin(phase * u) * np.sin(phase * v) < 0).astype(np.float32)
    if texture == 'rings':
        return (np.sin(phase * np.hypot(u, v)) < 0).astype(np.float32)
    raise ValueError(f'no texture {texture!r}; textures: '
                     f'{", ".join(TEXTURES)}')


def _rotate(rng: np.random.Generator, points: np.ndarray) -> np.ndarray:
    turn = rng.uniform(0, 2 * np.pi)
    rotation = np.array([[math.cos(turn), -math.sin(turn)],
                         [math.sin(turn), math.cos(turn)]])
    return points @ rotation.T


def _local(rng: np.random.Generator, dx: np.ndarray, dy: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    turn = rng.uniform(0, np.pi)
    cos, sin = math.cos(turn), math.sin(turn)
    return dx * cos + dy * sin, -dx * sin + dy * cos


def _rasterize(polygon: np.ndarray, image_size: tuple[int, int]
               ) -> np.ndarray:
    canvas = Image.new('1', image_size, 0)
    # no half-pixel shift, as the demo: the pixels pycocotools rasterizes
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in polygon], fill=1)
    return np.asarray(canvas, dtype=bool)


def _place(rng: np.random.Generator, unit: np.ndarray,
           image_size: tuple[int, int], occupied: np.ndarray,
           anchors: list[tuple[float, float, float]], touching: bool,
           sizes: tuple[float, ...] = SIZE_PROBABILITIES
           ) -> tuple[np.ndarray, np.ndarray] | None:
    """Scale ``unit`` into a size class (drawn with the probabilities
    ``sizes``) and put it on free pixels: the
    polygon (rounded to 0.01 px) and its mask, or ``None`` if no free spot
    was found.  Marks what it takes in ``occupied`` and ``anchors``."""
    unit_min, unit_max = unit.min(0), unit.max(0)
    x, y = unit[:, 0], unit[:, 1]
    unit_area = abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2
    room = np.array(image_size) - 2 * BORDER
    largest_area = (room / (unit_max - unit_min)).min()**2 * unit_area
    size_class = rng.choice(len(SIZE_AREA_RANGES), p=sizes)
    smallest = 0 if sizes[0] else 1  # the smallest class drawn
    while SIZE_AREA_RANGES[size_class][0] > largest_area and \
            size_class > smallest:
        size_class -= 1
    low, high = SIZE_AREA_RANGES[size_class]
    high = min(high, largest_area)
    area = math.exp(rng.uniform(math.log(low), math.log(high)))
    scale = math.sqrt(area / unit_area)
    radius = float(np.abs(unit).max() * scale)
    lowest = BORDER - unit_min * scale
    highest = np.array(image_size) - BORDER - unit_max * scale
    for _ in range(PLACEMENT_TRIES):
        if touching and anchors and rng.random() < TOUCH_PROBABILITY:
            ax, ay, other = anchors[int(rng.integers(len(anchors)))]
            turn = rng.uniform(0, 2 * np.pi)
            reach = (other + radius) * rng.uniform(0.7, 1.0)
            centre = np.clip([ax + reach * math.cos(turn),
                              ay + reach * math.sin(turn)], lowest, highest)
        else:
            centre = rng.uniform(lowest, highest)
        polygon = np.round(unit * scale + centre, 2)
        mask = _rasterize(polygon, image_size)
        if touching:  # the pixels, anywhere but on another object's
            taken = mask
        else:  # the box and a border, nowhere near another object's box
            x0, y0 = np.floor(polygon.min(0)).astype(int) - BORDER
            x1, y1 = np.ceil(polygon.max(0)).astype(int) + BORDER
            taken = np.zeros_like(occupied)
            taken[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1] = True
        if not mask.any() or (taken & occupied).any():
            continue
        occupied |= taken
        anchors.append((float(centre[0]), float(centre[1]), radius))
        return polygon, mask
    return None


def _paint(rng: np.random.Generator, pixels: np.ndarray,
           polygon: np.ndarray, mask: np.ndarray, texture: str,
           look: Appearance) -> None:
    """Fill ``mask`` with ``texture`` in two colours of the domain."""
    hue = rng.uniform(0, 1)
    first = 255 * np.array(colorsys.hsv_to_rgb(
        hue, rng.uniform(*look.saturation), rng.uniform(*look.value)))
    towards = 0.0 if look.dark else 255.0
    second = first + (towards - first) * rng.uniform(*look.contrast)
    centre = (polygon.min(0) + polygon.max(0)) / 2
    size = float(np.sqrt(np.prod(polygon.max(0) - polygon.min(0))))
    period = max(3.0, size * rng.uniform(0.22, 0.32))
    ys, xs = np.nonzero(mask)
    u, v = _local(rng, xs - centre[0], ys - centre[1])
    pattern = texture_mask(texture, u, v, period)[:, None]
    pixels[ys, xs] = (1 - pattern) * first + pattern * second
