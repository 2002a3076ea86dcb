"""The textured task of the demo data (issue 23): valid COCO, deterministic,
its options checked, the default task unchanged."""
from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from psbn_mmdet.demo.cli import demo_data_main
from psbn_mmdet.demo.data import TASKS, make_demo_data
from psbn_mmdet.demo.shapes import (DISTRACTORS, SHAPES, TEXTURED_CLASSES,
                                    TEXTURES, texture_mask, unit_shape)

SIZE = (160, 120)


def load_coco(ann_file) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(ann_file))


@pytest.fixture(scope='module')
def roots(tmp_path_factory) -> dict[str, Path]:
    roots = {}
    for domain in ('source', 'target'):
        root = tmp_path_factory.mktemp(domain)
        make_demo_data(root, num_train=40, num_val=4, image_size=SIZE,
                       task='textured', domain=domain)
        roots[domain] = root
    return roots


def test_classes_are_shape_times_texture():
    assert len(TEXTURED_CLASSES) == len(SHAPES) * len(TEXTURES) == 20
    assert TEXTURED_CLASSES[4 * SHAPES.index('star') + 1] == 'stripes_star'
    assert TASKS['textured'] == TEXTURED_CLASSES
    assert not set(DISTRACTORS) & set(SHAPES)


def test_valid_coco_with_small_touching_objects(roots):
    small = touching = 0
    for domain, root in roots.items():
        coco = load_coco(root / 'annotations/instances_train.json')
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == \
            list(TEXTURED_CLASSES)
        assert domain in coco.dataset['info']['description']
        for image_id, info in coco.imgs.items():
            assert (info['width'], info['height']) == SIZE
            anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
            assert anns, image_id
            masks = [coco.annToMask(a).astype(bool) for a in anns]
            for i, ann in enumerate(anns):
                x, y, w, h = ann['bbox']
                assert x >= 0 and y >= 0 and x + w <= SIZE[0] and \
                    y + h <= SIZE[1]
                small += ann['area'] < 32**2
                # pycocotools' masks of two objects share at most a
                # boundary row (Pillow drew them on disjoint pixels)
                for other in masks[i + 1:]:
                    shared = (masks[i] & other).sum()
                    assert shared <= max(w, h) + 2
                    grown = np.zeros_like(masks[i])
                    ys, xs = np.nonzero(masks[i])
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            grown[np.clip(ys + dy, 0, SIZE[1] - 1),
                                  np.clip(xs + dx, 0, SIZE[0] - 1)] = True
                    touching += bool((grown & other).any())
        used = Counter(a['category_id'] for a in coco.anns.values())
        assert len(used) >= 15, used  # 40 images reach most of 20 classes
    assert small > 0 and touching > 0


def test_domains_differ_in_appearance(roots):
    """The target is paler (its objects) and warmer (everything)."""
    means = {}
    for domain, root in roots.items():
        pixels = np.stack([np.asarray(Image.open(p), dtype=np.float32)
                           for p in sorted((root / 'train').glob('*.jpg'))])
        means[domain] = pixels.reshape(-1, 3).mean(0)
    red_minus_blue = {d: m[0] - m[2] for d, m in means.items()}
    assert red_minus_blue['target'] > red_minus_blue['source'] + 10


def test_deterministic_and_stamped(roots, tmp_path):
    make_demo_data(tmp_path, num_train=40, num_val=4, image_size=SIZE,
                   task='textured', domain='source')
    for name in ('train/000007.jpg', 'annotations/instances_train.json'):
        assert (tmp_path / name).read_bytes() == \
            (roots['source'] / name).read_bytes()
    stamp = json.loads((tmp_path / 'demo_data_stamp.json').read_text())
    assert stamp['task'] == 'textured' and stamp['domain'] == 'source'
    assert stamp['clutter'] == 2 and stamp['touching'] is True
    assert (tmp_path / 'train/000007.jpg').read_bytes() != \
        (roots['target'] / 'train/000007.jpg').read_bytes()


def test_default_task_stamp_is_unchanged(tmp_path):
    make_demo_data(tmp_path, num_train=1, num_val=1)
    assert json.loads((tmp_path / 'demo_data_stamp.json').read_text()) == \
        dict(version=1, num_train=1, num_val=1, image_size=[256, 192],
             seed=0)


def test_no_clutter_and_apart(tmp_path):
    make_demo_data(tmp_path, num_train=6, num_val=1, image_size=SIZE,
                   task='textured', domain='target', clutter=0,
                   touching=False)
    coco = load_coco(tmp_path / 'annotations/instances_train.json')
    for image_id in coco.imgs:
        boxes = [a['bbox'] for a in coco.loadAnns(
            coco.getAnnIds(imgIds=image_id))]
        for i, (x, y, w, h) in enumerate(boxes):
            for (u, v, p, q) in boxes[i + 1:]:
                assert x >= u + p or u >= x + w or y >= v + q or v >= y + h


@pytest.mark.parametrize('options', [
    dict(task='nope'), dict(domain='target'), dict(clutter=1),
    dict(touching=False), dict(task='textured', domain='moon'),
    dict(task='textured', clutter=-1), dict(task='textured', clutter=True),
    dict(task='textured', touching=1)])
def test_bad_options_raise(tmp_path, options):
    with pytest.raises(ValueError):
        make_demo_data(tmp_path / 'out', num_train=1, num_val=1, **options)
    assert not (tmp_path / 'out').exists()


def test_shape_and_texture_helpers():
    rng = np.random.default_rng(0)
    for name in SHAPES:
        points = unit_shape(rng, name)
        assert points.shape[1] == 2
        assert np.linalg.norm(points, axis=1).max() <= 1.1  # about unit
    with pytest.raises(ValueError):
        unit_shape(rng, 'hexagon')
    u, v = np.meshgrid(np.arange(-8.0, 8), np.arange(-8.0, 8))
    for texture in TEXTURES:
        pattern = texture_mask(texture, u, v, 4.0)
        assert set(np.unique(pattern)) <= {0.0, 1.0}
        assert (pattern.mean() == 0) == (texture == 'solid')
    with pytest.raises(ValueError):
        texture_mask('plaid', u, v, 4.0)


def test_cli_flags(tmp_path, capsys):
    demo_data_main(['--out-dir', str(tmp_path / 'd'), '--num-train', '2',
                    '--num-val', '1', '--image-size', '128', '96',
                    '--task', 'textured', '--domain', 'target',
                    '--clutter', '1', '--no-touching'])
    (line,) = capsys.readouterr().out.splitlines()
    assert '20 classes' in line
    stamp = json.loads((tmp_path / 'd/demo_data_stamp.json').read_text())
    assert (stamp['image_size'], stamp['domain'], stamp['clutter'],
            stamp['touching']) == ([128, 96], 'target', 1, False)


# ---------------------------------------------------------------- issue 38
EASY = ('solid_circle', 'stripes_circle', 'solid_star', 'rings_cross')


def test_restricted_classes_without_small_objects(tmp_path):
    """``classes`` and ``small=False``: only those categories (ids in the
    order given), no object in COCO's small range, a stamp that says so."""
    make_demo_data(tmp_path, num_train=12, num_val=2, image_size=SIZE,
                   task='textured', domain='target', classes=list(EASY),
                   small=False)
    coco = load_coco(tmp_path / 'annotations/instances_train.json')
    assert [(c['id'], c['name']) for c in coco.dataset['categories']] == \
        list(enumerate(EASY, 1))
    areas = [a['area'] for a in coco.anns.values()]
    assert areas and min(areas) >= 32**2
    assert {a['category_id'] for a in coco.anns.values()} <= {1, 2, 3, 4}
    stamp = json.loads((tmp_path / 'demo_data_stamp.json').read_text())
    assert stamp['classes'] == list(EASY) and stamp['small'] is False
    # stamped: the same call again touches nothing, another one redraws
    image = tmp_path / 'train/000003.jpg'
    mtime = image.stat().st_mtime_ns
    make_demo_data(tmp_path, num_train=12, num_val=2, image_size=SIZE,
                   task='textured', domain='target', classes=EASY,
                   small=False)
    assert image.stat().st_mtime_ns == mtime


def test_default_options_leave_the_textured_output_unchanged(roots,
                                                             tmp_path):
    """All 20 classes and ``small=True`` given explicitly are the default:
    the same bytes and the same stamp as issue 23's data."""
    make_demo_data(tmp_path, num_train=40, num_val=4, image_size=SIZE,
                   task='textured', domain='source',
                   classes=list(TEXTURED_CLASSES), small=True)
    for name in ('train/000011.jpg', 'annotations/instances_train.json',
                 'demo_data_stamp.json'):
        assert (tmp_path / name).read_bytes() == \
            (roots['source'] / name).read_bytes()
    stamp = json.loads((tmp_path / 'demo_data_stamp.json').read_text())
    assert 'classes' not in stamp and 'small' not in stamp


@pytest.mark.parametrize('options', [
    dict(classes=['solid_circle']), dict(small=False),
    dict(task='textured', classes=['solid_circle', 'plaid_circle']),
    dict(task='textured', classes=['solid_circle', 'solid_circle']),
    dict(task='textured', classes=[]),
    dict(task='textured', classes='solid_circle'),
    dict(task='textured', small=0), dict(task='textured', small='no')])
def test_bad_variant_options_raise_one_line(tmp_path, options):
    with pytest.raises(ValueError) as error:
        make_demo_data(tmp_path / 'out', num_train=1, num_val=1, **options)
    assert '\n' not in str(error.value)
    assert not (tmp_path / 'out').exists()
