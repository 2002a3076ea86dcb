"""A small synthetic COCO-format detection data set, generated on the spot.

The project's demo and tests need a detection data set that exists on any
machine without a download: :func:`make_demo_data` draws coloured shapes
(:data:`DEMO_CLASSES`) on noisy, textured backgrounds with Pillow and writes
them in the layout mmdet's ``CocoDataset`` reads::

    out_dir/annotations/instances_train.json   out_dir/train/000001.jpg ...
    out_dir/annotations/instances_val.json     out_dir/val/000001.jpg ...

Each class has its own shape and hue, so a tiny detector learns it within a few
dozen CPU iterations.  Every annotation carries the exact polygon that was
drawn, its bounding box ``[x, y, w, h]`` and its polygon area; object areas are
drawn from inside COCO's small / medium / large ranges (with a margin from the
32² and 96² boundaries), so ``bbox_mAP_s/m/l`` are all meaningful.  Objects
never overlap, so no mask hides part of another.

``task='textured'`` draws the harder task of :mod:`.shapes` instead: 20
classes of shape × texture in random colours, unannotated clutter, small and
touching objects, and two appearance domains (``domain='source'`` or
``'target'``) for a transfer finetune.  The default task's output is what it
always was.
``classes`` (some of the 20) and ``small=False`` (no object in COCO's small
range) make the textured task easier (issue 38); left at their defaults,
the textured task's output is what it always was too.

Output is a function of the parameters alone (numpy ``Generator`` seeded per
image, fixed JPEG settings).  A stamp file records the parameters: a second
call with the same ones returns at once without touching the files.
"""
from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from . import shapes
from .shapes import DOMAINS, TEXTURED_CLASSES

DEMO_CLASSES = ('circle', 'square', 'triangle', 'ellipse', 'star')

# Bump whenever the drawing changes, so stamped outputs get regenerated.
GENERATOR_VERSION = 1
TEXTURED_VERSION = 1  # the same for task 'textured' (.shapes)
#: task -> its classes ('shapes': the demo's)
TASKS = {'shapes': DEMO_CLASSES, 'textured': TEXTURED_CLASSES}

SPLITS = ('train', 'val')
STAMP_NAME = 'demo_data_stamp.json'
#: what a demo data root holds: anything else is not ours to replace
OWN_ENTRIES = {'annotations', *SPLITS, STAMP_NAME}
MIN_IMAGE_SIDE = 64
JPEG_SETTINGS = dict(format='JPEG', quality=90, subsampling=0)

# One saturated colour per class; backgrounds are kept muted and greyish.
CLASS_COLORS = ((220, 40, 40), (40, 180, 60), (40, 80, 230), (235, 200, 30),
                (200, 50, 210))
COLOR_JITTER = 20

# Polygon-area ranges per COCO size class (small < 32², medium < 96², large).
SIZE_AREA_RANGES = ((14**2, 28**2), (36**2, 88**2), (100**2, 112**2))
SIZE_PROBABILITIES = (0.4, 0.4, 0.2)
MAX_OBJECTS_PER_IMAGE = 6
BORDER = 2  # px kept free around each object and along the image edges
PLACEMENT_TRIES = 30


def make_demo_data(out_dir: str | Path = 'data/demo',
                   num_train: int = 48,
                   num_val: int = 16,
                   image_size: tuple[int, int] = (256, 192),
                   seed: int = 0,
                   force: bool = False,
                   *,
                   task: str = 'shapes',
                   domain: str | None = None,
                   clutter: int | None = None,
                   touching: bool | None = None,
                   classes: tuple[str, ...] | list[str] | None = None,
                   small: bool | None = None) -> dict[str, str]:
    """Write the demo data set to ``out_dir`` unless it is already there.

    Args:
        out_dir: Root of the data set (mmdet's ``data_root``).
        num_train: Number of training images (>= 1).
        num_val: Number of validation images (>= 1).
        image_size: ``(width, height)`` of every image, each >= 64.
        seed: Seed of the numpy random generators.
        force: Regenerate even if the stamp says the output is up to date.
        task: ``'shapes'`` (the demo's 5 coloured shapes) or ``'textured'``
            (:mod:`.shapes`: 20 classes of shape × texture).
        domain: Task ``'textured'`` only: ``'source'`` (default) or
            ``'target'``, the same classes in another appearance.
        clutter: Task ``'textured'`` only: the most unannotated distractors
            per image (default: the domain's, 2 or 4).
        touching: Task ``'textured'`` only: whether objects may touch
            (default ``True``).
        classes: Task ``'textured'`` only: the classes drawn, distinct names
            of :data:`TEXTURED_CLASSES` in that order (default: all 20); the
            categories are these, ids 1, 2, ... in the order given.
        small: Task ``'textured'`` only: whether objects (and clutter) in
            COCO's small range are drawn (default ``True``).

    Returns:
        Paths (as strings): ``root``, ``train_ann_file``, ``val_ann_file``,
        ``train_img_dir`` and ``val_img_dir``.

    Raises:
        ValueError: If a count or the image size is out of range, or an
            option does not belong to the task.
    """
    for name, count in (('num_train', num_train), ('num_val', num_val)):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f'{name} must be an integer >= 1, got {count!r}')
    width, height = (int(side) for side in image_size)
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ValueError(f'image_size must be at least {MIN_IMAGE_SIDE}x'
                         f'{MIN_IMAGE_SIDE}, got {width}x{height}')

    options = _task_options(task, domain, clutter, touching, classes, small)

    root = Path(out_dir)
    counts = dict(train=num_train, val=num_val)
    paths = dict(root=str(root))
    for split in SPLITS:
        paths[f'{split}_ann_file'] = str(_ann_file(root, split))
        paths[f'{split}_img_dir'] = str(root / split)
    stamp = dict(version=GENERATOR_VERSION, num_train=num_train,
                 num_val=num_val, image_size=[width, height], seed=seed)
    if options:  # the default task's stamp is what it always was
        stamp.update(task=task, task_version=TEXTURED_VERSION, **options)
    stamp_file = root / STAMP_NAME
    if not force and _is_up_to_date(root, stamp_file, stamp, counts):
        return paths

    if root.exists() and not root.is_dir():
        raise ValueError(f'{root} is a file, not a directory')
    if root.is_dir() and not {p.name for p in root.iterdir()} <= OWN_ENTRIES:
        raise ValueError(f'{root} holds files that are not the demo data '
                         'set: choose an empty or new directory')
    # Built beside, renamed into place: a concurrent run or an interrupted
    # one never leaves images that do not match the annotations.
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=f'.{root.name}.'))
    try:
        for split_index, split in enumerate(SPLITS):
            _write_split(staging, split, split_index, counts[split],
                         (width, height), seed, options)
        (staging / STAMP_NAME).write_text(json.dumps(stamp) + '\n')
        _replace_dir(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths


def _task_options(task: str, domain: str | None, clutter: int | None,
                  touching: bool | None, classes=None,
                  small: bool | None = None) -> dict:
    """The textured task's options, defaults filled in (``{}`` for the
    default task, which takes none); ``classes`` and ``small`` only when
    not the default (so the textured task's stamp is what it always was)."""
    if task not in TASKS:
        raise ValueError(f'task must be one of {", ".join(TASKS)}, got '
                         f'{task!r}')
    given = dict(domain=domain, clutter=clutter, touching=touching,
                 classes=classes, small=small)
    if task == 'shapes':
        extra = [name for name, value in given.items() if value is not None]
        if extra:
            raise ValueError(f'{", ".join(extra)}: only for task '
                             "'textured'")
        return {}
    domain = 'source' if domain is None else domain
    if domain not in DOMAINS:
        raise ValueError(f'domain must be one of {", ".join(DOMAINS)}, got '
                         f'{domain!r}')
    if clutter is None:
        clutter = shapes.APPEARANCES[domain].clutter
    if isinstance(clutter, bool) or not isinstance(clutter, int) \
            or clutter < 0:
        raise ValueError(f'clutter must be an integer >= 0, got {clutter!r}')
    if touching is None:
        touching = True
    if not isinstance(touching, bool):
        raise ValueError(f'touching must be True or False, got {touching!r}')
    options = dict(domain=domain, clutter=clutter, touching=touching)
    if classes is not None:
        if isinstance(classes, str) or not isinstance(classes, (list, tuple)) \
                or not classes or len(set(classes)) != len(classes) \
                or not set(classes) <= set(TEXTURED_CLASSES):
            raise ValueError('classes must be distinct names of the 20 '
                             f'textured classes (e.g. {TEXTURED_CLASSES[0]!r})'
                             f', got {classes!r}')
        if tuple(classes) != TEXTURED_CLASSES:
            options['classes'] = list(classes)
    if small is not None and not isinstance(small, bool):
        raise ValueError(f'small must be True or False, got {small!r}')
    if small is False:
        options['small'] = False
    return options


def _replace_dir(new: Path, root: Path) -> None:
    """Rename ``new`` to ``root``, moving an existing ``root`` out first."""
    while True:
        try:
            os.rename(new, root)
            return
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        old = Path(tempfile.mkdtemp(dir=root.parent,
                                    prefix=f'.{root.name}.old.'))
        try:
            os.rename(root, old / 'data')
        except FileNotFoundError:  # another run moved it first: retry
            pass
        finally:
            shutil.rmtree(old, ignore_errors=True)


def _ann_file(root: Path, split: str) -> Path:
    return root / 'annotations' / f'instances_{split}.json'


def _image_name(image_id: int) -> str:
    return f'{image_id:06d}.jpg'


def _is_up_to_date(root: Path, stamp_file: Path, stamp: dict,
                   counts: dict[str, int]) -> bool:
    try:
        if json.loads(stamp_file.read_text()) != stamp:
            return False
    except (OSError, ValueError):
        return False
    expected = [_ann_file(root, split) for split in SPLITS]
    for split in SPLITS:
        expected += [root / split / _image_name(image_id)
                     for image_id in range(1, counts[split] + 1)]
    return all(path.is_file() for path in expected)


def _write_split(root: Path, split: str, split_index: int, num_images: int,
                 image_size: tuple[int, int], seed: int,
                 options: dict) -> None:
    image_dir = root / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    classes = tuple(options.get('classes') or
                    TASKS['textured' if options else 'shapes'])
    for image_id in range(1, num_images + 1):
        # A generator per image: image k is the same whatever the split sizes.
        if not options:
            rng = np.random.default_rng([seed, split_index, image_id])
            image, objects = _draw_image(rng, image_size)
        else:  # the domains draw independent images
            rng = np.random.default_rng([
                seed, split_index, image_id,
                1 + DOMAINS.index(options['domain'])])
            image, objects = shapes.draw_textured(
                rng, image_size, **dict(options, classes=options.get(
                    'classes') and tuple(options['classes'])))
        file_name = _image_name(image_id)
        image.save(image_dir / file_name, **JPEG_SETTINGS)
        images.append(dict(id=image_id, file_name=file_name,
                           width=image_size[0], height=image_size[1]))
        for category_index, polygon in objects:
            annotations.append(
                _annotation(len(annotations) + 1, image_id,
                            category_index + 1, polygon))

    written = {_image_name(image_id) for image_id in range(1, num_images + 1)}
    for stale in image_dir.glob('[0-9]' * 6 + '.jpg'):
        if stale.name not in written:
            stale.unlink()

    info = dict(description='psbn-mmdet synthetic shapes demo data',
                version=str(GENERATOR_VERSION))
    if options:
        info = dict(description='psbn-mmdet synthetic textured shapes, '
                    f'{options["domain"]} domain',
                    version=str(TEXTURED_VERSION))
    coco = dict(
        info=info,
        licenses=[],
        images=images,
        annotations=annotations,
        categories=[dict(id=index + 1, name=name, supercategory='shape')
                    for index, name in enumerate(classes)])
    ann_file = _ann_file(root, split)
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(coco) + '\n')


def _annotation(ann_id: int, image_id: int, category_id: int,
                polygon: np.ndarray) -> dict:
    x_min, y_min = polygon.min(axis=0)
    x_max, y_max = polygon.max(axis=0)
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=category_id,
        bbox=[float(x_min), float(y_min),
              round(float(x_max - x_min), 2), round(float(y_max - y_min), 2)],
        segmentation=[[float(v) for v in polygon.ravel()]],
        area=round(polygon_area(polygon), 2),
        iscrowd=0)


def polygon_area(polygon: np.ndarray) -> float:
    """Area of a simple polygon given as an ``(N, 2)`` array (shoelace)."""
    x, y = polygon[:, 0], polygon[:, 1]
    twice_area = np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))
    return float(abs(twice_area) / 2)


def _draw_image(rng: np.random.Generator, image_size: tuple[int, int]
                ) -> tuple[Image.Image, list[tuple[int, np.ndarray]]]:
    """One image and its ``(category_index, polygon)`` objects."""
    image = _background(rng, image_size)
    draw = ImageDraw.Draw(image)
    occupied: list[np.ndarray] = []  # [x_min, y_min, x_max, y_max] per object
    objects = []
    for _ in range(rng.integers(1, MAX_OBJECTS_PER_IMAGE + 1)):
        category_index = int(rng.integers(len(DEMO_CLASSES)))
        polygon = _place(rng, _unit_shape(rng, category_index), image_size,
                         occupied)
        if polygon is None:
            continue
        color = np.array(CLASS_COLORS[category_index]) + rng.integers(
            -COLOR_JITTER, COLOR_JITTER + 1, size=3)
        # No half-pixel shift: Pillow fills the very pixels that pycocotools
        # (hence mmdet's poly2mask) rasterizes for this polygon.
        draw.polygon([tuple(point) for point in polygon],
                     fill=tuple(int(c) for c in color.clip(0, 255)))
        occupied.append(np.concatenate([polygon.min(0), polygon.max(0)]))
        objects.append((category_index, polygon))
    pixels = np.asarray(image, dtype=np.float32)
    pixels += rng.normal(0, 6, size=pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8)), objects


def _background(rng: np.random.Generator,
                image_size: tuple[int, int]) -> Image.Image:
    """Smooth muted colour blotches crossed by a few grey lines."""
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
    return image


def _unit_shape(rng: np.random.Generator, category_index: int) -> np.ndarray:
    """Vertices ``(N, 2)`` of a randomly rotated shape of about unit radius."""
    name = DEMO_CLASSES[category_index]
    if name in ('circle', 'ellipse'):
        angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        minor = 1.0 if name == 'circle' else rng.uniform(0.4, 0.6)
        points = np.stack([np.cos(angles), minor * np.sin(angles)], axis=1)
    elif name in ('square', 'triangle'):
        corners = 4 if name == 'square' else 3
        angles = np.arange(corners) * 2 * np.pi / corners
        points = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    elif name == 'star':
        angles = np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        points = radii[:, None] * np.stack([np.cos(angles), np.sin(angles)],
                                           axis=1)
    else:
        raise AssertionError(f'no shape for class {name!r}')
    turn = rng.uniform(0, 2 * np.pi)
    rotation = np.array([[math.cos(turn), -math.sin(turn)],
                         [math.sin(turn), math.cos(turn)]])
    return points @ rotation.T


def _place(rng: np.random.Generator, unit_shape: np.ndarray,
           image_size: tuple[int, int],
           occupied: list[np.ndarray]) -> np.ndarray | None:
    """Scale ``unit_shape`` into a COCO size class and put it somewhere free.

    Returns the polygon in pixel coordinates (rounded to 0.01 px), or ``None``
    if no free spot was found.
    """
    unit_min, unit_max = unit_shape.min(0), unit_shape.max(0)
    unit_area = polygon_area(unit_shape)
    room = np.array(image_size) - 2 * BORDER
    largest_area = (room / (unit_max - unit_min)).min()**2 * unit_area
    size_class = rng.choice(len(SIZE_AREA_RANGES), p=SIZE_PROBABILITIES)
    while SIZE_AREA_RANGES[size_class][0] > largest_area and size_class > 0:
        size_class -= 1  # this image is too small for the class drawn
    low, high = SIZE_AREA_RANGES[size_class]
    high = min(high, largest_area)
    area = math.exp(rng.uniform(math.log(low), math.log(high)))
    scale = math.sqrt(area / unit_area)
    shape_min, shape_max = unit_min * scale, unit_max * scale
    # Centres keeping the shape BORDER px away from every image edge.
    lowest = BORDER - shape_min
    highest = np.array(image_size) - BORDER - shape_max
    for _ in range(PLACEMENT_TRIES):
        centre = rng.uniform(lowest, highest)
        box = np.concatenate([centre + shape_min, centre + shape_max])
        if all(_apart(box, other) for other in occupied):
            return np.round(unit_shape * scale + centre, 2)
    return None


def _apart(box: np.ndarray, other: np.ndarray) -> bool:
    """Whether two ``[x_min, y_min, x_max, y_max]`` boxes are BORDER apart."""
    return bool(box[0] >= other[2] + BORDER or other[0] >= box[2] + BORDER
                or box[1] >= other[3] + BORDER or other[1] >= box[3] + BORDER)
