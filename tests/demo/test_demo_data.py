"""The generated demo data: deterministic, valid COCO, readable by mmdet."""
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

from conftest import REPO, run_tool
from psbn_mmdet.demo.data import DEMO_CLASSES, make_demo_data

SPLITS = ('train', 'val')
DEFAULT_COUNTS = dict(train=48, val=16)
WIDTH, HEIGHT = 256, 192


def load_coco(ann_file) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints timings
        return COCO(str(ann_file))


def size_range(area: float) -> str:
    """COCO's evaluation size class of an annotation area."""
    return 'small' if area < 32**2 else 'medium' if area < 96**2 else 'large'


def polygon_points(ann: dict) -> np.ndarray:
    (polygon,) = ann['segmentation']
    return np.array(polygon).reshape(-1, 2)


def all_files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes()
            for path in sorted(root.rglob('*')) if path.is_file()}


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('demo_a')
    make_demo_data(root)
    return root


@pytest.fixture(scope='module')
def cocos(demo_root) -> dict[str, COCO]:
    return {split: load_coco(demo_root / 'annotations' /
                             f'instances_{split}.json') for split in SPLITS}


def test_returns_the_paths_it_writes(demo_root):
    paths = make_demo_data(demo_root)
    assert paths == dict(
        root=str(demo_root),
        train_ann_file=str(demo_root / 'annotations/instances_train.json'),
        val_ann_file=str(demo_root / 'annotations/instances_val.json'),
        train_img_dir=str(demo_root / 'train'),
        val_img_dir=str(demo_root / 'val'))
    for split in SPLITS:
        assert len(list(Path(paths[f'{split}_img_dir']).glob('*.jpg'))) == \
            DEFAULT_COUNTS[split]


def test_generation_is_deterministic(demo_root, tmp_path):
    make_demo_data(tmp_path)
    first, second = all_files(demo_root), all_files(tmp_path)
    assert len(first) == sum(DEFAULT_COUNTS.values()) + 3  # 2 JSONs, stamp
    assert first.keys() == second.keys()
    assert all(first[name] == second[name] for name in first)


def test_another_seed_gives_other_images(demo_root, tmp_path):
    make_demo_data(tmp_path, num_train=1, num_val=1, seed=1)
    image = 'train/000001.jpg'
    assert (tmp_path / image).read_bytes() != (demo_root / image).read_bytes()


def test_images_and_categories(cocos, demo_root):
    for split, coco in cocos.items():
        assert [cat['name'] for cat in coco.loadCats(coco.getCatIds())] == \
            list(DEMO_CLASSES)
        assert coco.getCatIds() == list(range(1, len(DEMO_CLASSES) + 1))
        assert len(coco.imgs) == DEFAULT_COUNTS[split]
        for image_id, info in coco.imgs.items():
            with Image.open(demo_root / split / info['file_name']) as image:
                assert image.size == (info['width'], info['height']) == \
                    (WIDTH, HEIGHT)
            assert 1 <= len(coco.getAnnIds(imgIds=image_id)) <= 6


def test_boxes_polygons_and_areas_agree(cocos):
    for coco in cocos.values():
        assert coco.anns
        for ann in coco.anns.values():
            image = coco.imgs[ann['image_id']]
            x, y, w, h = ann['bbox']
            assert 0 <= x and 0 <= y and w > 0 and h > 0
            assert x + w <= image['width'] and y + h <= image['height']
            points = polygon_points(ann)
            assert len(points) >= 3
            np.testing.assert_allclose(
                [*points.min(0), *points.max(0)], [x, y, x + w, y + h],
                atol=1)
            assert ann['area'] > 0 and ann['iscrowd'] == 0
            # COCO's rasterized mask covers the polygon plus about half its
            # boundary pixels.
            perimeter = np.linalg.norm(
                points - np.roll(points, 1, axis=0), axis=1).sum()
            assert abs(coco.annToMask(ann).sum() - ann['area']) <= perimeter


def test_masks_match_the_drawn_shapes(cocos, demo_root):
    """Near each object, the pixels of its colour are where its mask is."""
    for split, coco in cocos.items():
        for ann in coco.anns.values():
            file_name = coco.imgs[ann['image_id']]['file_name']
            pixels = np.asarray(Image.open(demo_root / split / file_name),
                                dtype=np.float32)
            mask = coco.annToMask(ann).astype(bool)
            colour = np.median(pixels[mask], axis=0)
            x, y, w, h = (int(v) for v in ann['bbox'])
            near_box = np.zeros_like(mask)
            near_box[max(y - 3, 0):y + h + 4, max(x - 3, 0):x + w + 4] = True
            painted = near_box & (np.linalg.norm(pixels - colour, axis=2) < 40)
            iou = (painted & mask).sum() / (painted | mask).sum()
            assert iou > 0.8, (split, ann['id'], iou)


def test_all_coco_size_ranges_occur(cocos):
    for split, coco in cocos.items():
        sizes = Counter(size_range(ann['area']) for ann in coco.anns.values())
        assert set(sizes) == {'small', 'medium', 'large'}, (split, sizes)


def test_every_category_occurs(cocos):
    for split, coco in cocos.items():
        used = {ann['category_id'] for ann in coco.anns.values()}
        assert used == set(coco.getCatIds()), split


def test_up_to_date_output_is_left_alone(tmp_path):
    make_demo_data(tmp_path, num_train=3, num_val=1)
    stamp = tmp_path / 'demo_data_stamp.json'
    image = tmp_path / 'train/000003.jpg'
    image.write_bytes(b'changed by hand')
    make_demo_data(tmp_path, num_train=3, num_val=1)
    assert image.read_bytes() == b'changed by hand'

    make_demo_data(tmp_path, num_train=3, num_val=1, force=True)
    assert image.read_bytes()[:2] == b'\xff\xd8'  # a JPEG again

    make_demo_data(tmp_path, num_train=2, num_val=1)
    assert json.loads(stamp.read_text())['num_train'] == 2
    assert not image.exists()  # stale image of the larger set removed
    assert len(load_coco(tmp_path / 'annotations/instances_train.json').imgs) \
        == 2


def test_missing_file_triggers_regeneration(tmp_path):
    make_demo_data(tmp_path, num_train=2, num_val=1)
    image = tmp_path / 'val/000001.jpg'
    image.unlink()
    make_demo_data(tmp_path, num_train=2, num_val=1)
    assert image.is_file()


@pytest.mark.parametrize('options', [
    dict(num_train=0), dict(num_val=-1), dict(num_train=2.5),
    dict(image_size=(63, 192))])
def test_bad_parameters_raise(tmp_path, options):
    with pytest.raises(ValueError):
        make_demo_data(tmp_path / 'out', **options)
    assert not (tmp_path / 'out').exists()


@pytest.mark.slow
def test_cli_writes_data_demo_in_current_directory(tmp_path):
    result = run_tool(REPO / 'tools/make_demo_data.py', '--num-train', '2',
                      '--num-val', '1', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1
    coco = load_coco(tmp_path / 'data/demo/annotations/instances_train.json')
    assert len(coco.imgs) == 2


@pytest.mark.slow
def test_cli_rejects_a_count_below_one(tmp_path):
    result = run_tool(REPO / 'tools/make_demo_data.py', '--num-train', '0',
                      '--out-dir', tmp_path / 'out')
    assert result.returncode == 2
    assert result.stdout == ''
    (line,) = result.stderr.splitlines()
    assert line.startswith('make_demo_data: error: num_train')
    assert not (tmp_path / 'out').exists()


def test_mmdet_coco_dataset_reads_it(demo_root, cocos):
    pytest.importorskip('mmdet')
    from mmdet.datasets import CocoDataset
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    dataset = CocoDataset(
        data_root=str(demo_root),
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        metainfo=dict(classes=DEMO_CLASSES),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
            dict(type='PackDetInputs')
        ])
    assert len(dataset) == DEFAULT_COUNTS['train']

    sample = dataset[0]
    info = sample['data_samples'].metainfo
    coco = cocos['train']
    image_id = info['img_id']
    anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
    instances = sample['data_samples'].gt_instances
    assert tuple(sample['inputs'].shape) == (3, HEIGHT, WIDTH)
    assert len(instances) == len(anns)
    assert instances.labels.tolist() == [
        ann['category_id'] - 1 for ann in anns]
    expected_boxes = [[x, y, x + w, y + h] for x, y, w, h in
                      (ann['bbox'] for ann in anns)]
    np.testing.assert_allclose(instances.bboxes.tensor.numpy(), expected_boxes,
                               atol=1e-3)
    masks = instances.masks.to_ndarray()
    assert masks.shape == (len(anns), HEIGHT, WIDTH)
    np.testing.assert_array_equal(
        masks, np.stack([coco.annToMask(ann) for ann in anns]))


@pytest.mark.slow
def test_concurrent_writers_leave_one_consistent_data_set(tmp_path):
    """Two processes, different seeds and sizes, one directory: whichever
    finishes last wins whole, and its stamp matches every file."""
    import json
    import subprocess
    import sys
    out = tmp_path / 'shared'
    runs = [subprocess.Popen(
        [sys.executable, str(REPO / 'tools/make_demo_data.py'), '--out-dir',
         str(out), '--num-train', str(n), '--num-val', '2', '--seed',
         str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for seed, n in ((1, 12), (2, 9))]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stderr.read()
    stamp = json.loads((out / 'demo_data_stamp.json').read_text())
    reference = tmp_path / 'reference'
    make_demo_data(reference, num_train=stamp['num_train'], num_val=2,
                   seed=stamp['seed'])
    files = sorted(p.relative_to(out) for p in out.rglob('*') if p.is_file())
    assert files == sorted(p.relative_to(reference)
                           for p in reference.rglob('*') if p.is_file())
    for name in files:
        assert (out / name).read_bytes() == (reference / name).read_bytes()
    assert [p.name for p in tmp_path.iterdir()
            if p.name.startswith('.')] == []  # no staging left behind


def test_out_dir_that_is_a_file_or_holds_other_files_is_refused(tmp_path):
    afile = tmp_path / 'afile'
    afile.write_text('x')
    with pytest.raises(ValueError, match='is a file'):
        make_demo_data(afile, num_train=1, num_val=1)
    home = tmp_path / 'home'
    home.mkdir()
    (home / 'thesis.tex').write_text('precious')
    with pytest.raises(ValueError, match='not the demo data set'):
        make_demo_data(home, num_train=1, num_val=1)
    assert (home / 'thesis.tex').read_text() == 'precious'
