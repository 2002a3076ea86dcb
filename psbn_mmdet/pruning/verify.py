"""Checking a pruned detector against the original: the self-check and the test images."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os.path as osp
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from torch import nn

from ..analysis.probe import build_dataset, check_images, extents
from ..core.criteria import ACTIVATION_THRESHOLD, channel_max, dead_activation
from .plan import CHECK_TOLERANCE, ChannelPlan


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max |a|`` (0 for two empty or all-zero tensors)."""
    if a.numel() == 0 and b.numel() == 0:
        return 0.0
    scale = a.detach().abs().max().double()
    diff = (a.detach().double() - b.detach().double()).abs().max()
    return float(diff / scale) if scale > 0 else float(diff)


def detection_difference(a, b) -> float:
    """Relative difference of two images' detections: boxes and scores
    (:func:`relative_difference`); ``inf`` when their number or labels
    differ."""
    if len(a) != len(b) or not torch.equal(a.labels, b.labels):
        return float('inf')
    return max(relative_difference(a.bboxes, b.bboxes),
               relative_difference(a.scores, b.scores))


@dataclass
class SelfCheck:
    """The pruned detector against the original on the calibration images."""
    images: int = 0
    features: float = 0.0  # max relative difference of backbone outputs
    detections: float = 0.0  # max relative difference of detections
    differing_images: int = 0  # images whose detections differ in kind

    @property
    def passed(self) -> bool:
        return max(self.features, self.detections) <= CHECK_TOLERANCE


@dataclass
class Evaluation:
    """bbox mAP of both detectors on the test images, and how often a
    channel removed as dead is active there."""
    images: int
    map_before: float | None
    map_after: float | None
    removed_dead: dict[str, int] = field(default_factory=dict)
    woken: dict[str, int] = field(default_factory=dict)  # channels, by stage
    images_waking: int = 0  # images on which any removed channel is active


def _capture_output(module: nn.Module, store: list):
    return module.register_forward_hook(
        lambda m, args, output: store.append([o.clone() for o in output]))


def self_check(original, pruned, batches) -> SelfCheck:
    """Run both detectors on preprocessed ``batches`` (``inputs``,
    ``data_samples``); compare backbone outputs and detections."""
    check = SelfCheck()
    for inputs, samples in batches:
        results, features = [], []
        for model in (original, pruned):
            store: list = []
            handle = _capture_output(model.backbone, store)
            try:
                with torch.inference_mode():
                    results.append(model.predict(inputs,
                                                 copy.deepcopy(samples)))
            finally:
                handle.remove()
            features.append(store[0])
        check.features = max([check.features] + [
            relative_difference(a, b) for a, b in zip(*features)])
        for a, b in zip(*results):
            diff = detection_difference(a.pred_instances, b.pred_instances)
            check.differing_images += diff == float('inf')
            check.detections = max(check.detections, diff)
        check.images += len(samples)
    return check


class TestSet:
    """The first ``num_images`` (None: all) of a config's test (or val) set
    with its evaluator, to measure two detectors on.  Built, and its images
    checked, when constructed: before any other work.  A COCO evaluator is
    given the annotations of those images only, so that mAP is of them.
    ``available`` is False when the config has no test data or evaluator.

    Raises:
        UserError: the data set cannot be built or its images are missing.
    """

    def __init__(self, cfg, config_path, num_images: int | None) -> None:
        loader_cfg = cfg.get('test_dataloader') or cfg.get('val_dataloader')
        metric_cfg = cfg.get('test_evaluator') or cfg.get('val_evaluator')
        self.available = bool(loader_cfg and metric_cfg
                              and 'dataset' in loader_cfg)
        if not self.available:
            return
        self.loader_cfg = copy.deepcopy(loader_cfg)
        self.metric_cfg = copy.deepcopy(metric_cfg)
        dataset = build_dataset(Config(dict(test_dataloader=loader_cfg)),
                                config_path)
        self.images = min(num_images or len(dataset), len(dataset))
        check_images(dataset, self.images, config_path)
        if self.images < len(dataset):
            self.loader_cfg.dataset.indices = self.images
            self._subset_annotations(
                [dataset.get_data_info(i)['img_id']
                 for i in range(self.images)])

    def _subset_annotations(self, img_ids: list) -> None:
        """Point a COCO metric at the annotations of ``img_ids`` only."""
        metrics = (self.metric_cfg if isinstance(self.metric_cfg, list)
                   else [self.metric_cfg])
        self._tmp = tempfile.TemporaryDirectory()
        for index, metric in enumerate(metrics):
            ann_file = metric.get('ann_file')
            if not ann_file:
                continue
            with open(ann_file) as f:
                coco = json.load(f)
            keep = set(img_ids)
            coco['images'] = [i for i in coco['images'] if i['id'] in keep]
            coco['annotations'] = [a for a in coco.get('annotations', [])
                                   if a['image_id'] in keep]
            metric['ann_file'] = osp.join(self._tmp.name, f'{index}.json')
            with open(metric['ann_file'], 'w') as f:
                json.dump(coco, f)

    def evaluate(self, original, pruned, plans: Sequence[ChannelPlan],
                 activation_threshold: float = ACTIVATION_THRESHOLD
                 ) -> Evaluation | None:
        """bbox mAP of both detectors on the images with the config's
        evaluator, and per image which channels removed as dead are active
        (max post-ReLU activation at or above the threshold on the image's
        own pixels).  None when the config has no test data or evaluator."""
        if not self.available:
            return None
        return _evaluate(self.loader_cfg, self.metric_cfg, original, pruned,
                         plans, activation_threshold)


def _evaluate(loader_cfg, metric_cfg, original, pruned,
              plans: Sequence[ChannelPlan], activation_threshold: float
              ) -> Evaluation:
    from mmengine.evaluator import Evaluator
    from mmengine.runner import Runner
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' chatter
        loader = Runner.build_dataloader(copy.deepcopy(loader_cfg))
        evaluators = [Evaluator(copy.deepcopy(metric_cfg)) for _ in range(2)]
    for evaluator in evaluators:
        evaluator.dataset_meta = loader.dataset.metainfo
    watched = {plan.bn.name: plan for plan in plans if plan.dead.any()}
    woken = {name: torch.zeros_like(plan.dead)
             for name, plan in watched.items()}
    per_image: dict[str, torch.Tensor] = {}
    sizes: list = []  # the batch's extents

    def hook(name):
        def record(module, args, output):
            per_image[name] = torch.stack([
                channel_max(output[i:i + 1], sizes[i:i + 1])
                for i in range(output.shape[0])])
        return record

    handles = [original.backbone.get_submodule(name).register_forward_hook(
        hook(name)) for name in watched]
    result = Evaluation(len(loader.dataset), None, None)
    try:
        for data in loader:
            with torch.inference_mode():
                batch = original.data_preprocessor(data, False)
                sizes[:] = extents(batch['inputs'], batch['data_samples'])
                for model, evaluator in zip((original, pruned), evaluators):
                    out = model.predict(batch['inputs'],
                                        copy.deepcopy(batch['data_samples']))
                    evaluator.process(data_samples=out, data_batch=data)
            active = torch.zeros(len(sizes), dtype=torch.bool)
            for name, plan in watched.items():
                awake = ~dead_activation(per_image[name],
                                         activation_threshold) & plan.dead
                woken[name] |= awake.any(0)
                active |= awake.any(1)
            result.images_waking += int(active.sum())
    finally:
        for handle in handles:
            handle.remove()
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('WARNING')  # CocoMetric logs its whole summary
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            maps = [e.evaluate(len(loader.dataset)) for e in evaluators]
    finally:
        logger.setLevel(level)
    key = next((k for k in maps[0] if k.endswith('bbox_mAP')), None)
    if key is not None:
        result.map_before, result.map_after = maps[0][key], maps[1][key]
    for name, plan in watched.items():
        stage = plan.bn.stage
        result.removed_dead[stage] = (result.removed_dead.get(stage, 0)
                                      + int(plan.dead.sum()))
        result.woken[stage] = (result.woken.get(stage, 0)
                               + int(woken[name].sum()))
    return result
