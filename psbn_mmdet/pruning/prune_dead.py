"""Remove a detector's dead backbone channels: ``tools/prune_dead.py``.

A channel inside a ResNet block (a BasicBlock's ``bn1``, a Bottleneck's
``bn1`` and ``bn2``) feeds only the block's next convolution, through a ReLU.
It can go when what it feeds that convolution is known:

* **dead** (the activation criterion of :mod:`psbn_mmdet.core.criteria`): its BN
  output never exceeds 0 on the calibration images, so after the ReLU it is
  exactly 0 there.  Removing its filter, its BN entries and the next conv's
  input slice changes nothing on those images (up to the order of float
  summation).  On other images it may wake: the tool measures how often.
* **constant** (the parameter criterion, ``|γ| < threshold``): its output is
  ``ReLU(β + γ·x̂) ≈ ReLU(β) = k``.  Removing it takes ``k`` out of the next
  conv's input; that conv has no bias, so ``k · Σ W[:, c]`` is folded into
  the next BN's ``running_mean`` (in training mode BN subtracts the batch
  mean and the shift cancels anyway).  This is exact when ``k = 0`` and
  through a 1x1 convolution.  Through a zero-padded 3x3 convolution it is
  exact inside the image only: at the border the padding contributed 0, not
  ``k``.  Such channels are kept unless ``fold_padded=True`` (see
  docs/prune.md for what that changes).

The pruned backbone is a :class:`~psbn_mmdet.models.backbones.pruned_resnet.PrunedResNet`
(mmdet's ResNet with per-block widths); its state dict has ResNet's keys with
narrower tensors, so the written checkpoint loads strictly.

:func:`prune_dead` is what the tool calls: it finds the channels on the
calibration images, writes a pruned config and checkpoint only after
checking that the pruned detector's backbone features and detections on those
images equal the original's (relative difference within
:data:`CHECK_TOLERANCE`), and reports bbox mAP before and after on the
config's test images.  Costs (parameters, FLOPs) are counted per stage with
:func:`stage_costs`.
"""
from __future__ import annotations

import copy
import os.path as osp
from collections.abc import Sequence
from dataclasses import dataclass

from mmengine.config import Config

from ..analysis.probe import ActivationProbe
from ..core.criteria import ACTIVATION_THRESHOLD, GAMMA_THRESHOLD
from ..core.roles import STAGES
from ..io.builders import load_detector
from ..io.checkpoint import read_checkpoint, save_model
from ..utils.config import load_config
from ..utils.errors import UserError
from ..utils.files import check_writable
from ..utils.table import text_table
from .calibrate import calibrate, compositions
from .costs import StageCost, stage_costs
from .plan import (CHECK_TOLERANCE, ChannelPlan, check_backbone,
                   find_removable, internal_bns)
from .surgery import block_widths, prune_state_dict, pruned_config
from .verify import Evaluation, SelfCheck, TestSet, self_check

#: calibration images when the tool is given no number
DEFAULT_NUM_IMAGES = 100
#: test images for mAP before and after, when the tool is given no number
DEFAULT_EVAL_IMAGES = 100


def calibration_config(cfg, config_path):
    """A data config for :class:`~psbn_mmdet.analysis.ActivationProbe`: the
    training images of ``cfg`` through its test pipeline."""
    train = cfg.get('train_dataloader', {}).get('dataset')
    test = (cfg.get('test_dataloader') or cfg.get('val_dataloader') or {}
            ).get('dataset', {})
    pipeline = test.get('pipeline') or cfg.get('test_pipeline')
    if not train or 'pipeline' not in train or not pipeline:
        raise UserError(f'{config_path}: no train_dataloader.dataset with a '
                        'pipeline and no test pipeline to calibrate with; '
                        'give a data config')
    dataset = copy.deepcopy(train)
    dataset['pipeline'] = copy.deepcopy(pipeline)
    dataset['test_mode'] = True
    dataset.pop('filter_cfg', None)
    return Config(dict(test_dataloader=dict(dataset=dataset)))


@dataclass
class PruneResult:
    config: str  # the pruned config written (or that would be)
    checkpoint: str
    plans: list[ChannelPlan]
    before: dict[str, StageCost]
    after: dict[str, StageCost]
    input_shape: tuple[int, int, int]
    check: SelfCheck
    evaluation: Evaluation | None
    calibration_images: int
    written: bool = False


def prune_dead(config: str, checkpoint: str, out_dir: str, *,
               data_config: str | None = None,
               num_images: int | None = DEFAULT_NUM_IMAGES,
               batch_size: int = 4,
               gamma_threshold: float = GAMMA_THRESHOLD,
               activation_threshold: float = ACTIVATION_THRESHOLD,
               fold_padded: bool = False, channels_last: bool = False,
               eval_images: int | None = DEFAULT_EVAL_IMAGES,
               write: bool = True) -> PruneResult:
    """Prune, check, evaluate, then write ``OUT_DIR/<name>_pruned.py`` and
    ``.pth`` (both or neither; nothing when the self-check fails).

    Calibration images: ``data_config``'s test (or val) set, like the
    report's; without it, the first ``num_images`` training images of
    ``config`` through its test pipeline; in the batch compositions of
    :func:`~psbn_mmdet.pruning.calibrate.compositions`, which the self-check
    runs too.  With ``channels_last`` the pruned backbone computes in NHWC
    (:class:`~psbn_mmdet.models.backbones.PrunedResNet`); the self-check then
    covers that path.  ``eval_images``: how many of the config's test images
    measure mAP before and after (None: all; 0: none).

    Raises:
        UserError: bad input (a config or checkpoint that cannot be read or
            do not match, an unsupported backbone, test images that are
            missing, no removable channel, an out dir that cannot be
            written), before anything is written.
    """
    from ..models import backbones  # noqa: F401  PrunedResNet (imports mmdet)
    check_writable(out_dir, is_dir=True)
    cfg = load_config(config)
    check_backbone(cfg)
    ckpt = read_checkpoint(checkpoint)
    original = load_detector(cfg, ckpt.state, f'{checkpoint} does not match '
                             f'the model of {config}')
    name = osp.splitext(osp.basename(config))[0]
    out_config = osp.join(out_dir, f'{name}_pruned.py')
    out_checkpoint = osp.join(out_dir, f'{name}_pruned.pth')
    test_set = (TestSet(cfg, config, eval_images) if eval_images != 0
                else None)  # its images are checked before any work
    probe = ActivationProbe(
        config, data_config or calibration_config(cfg, config), num_images,
        batch_size, source=data_config or f'{config} (training images)')

    positions = internal_bns(original.backbone)
    calibration = calibrate(original.backbone, positions,
                            compositions(probe))
    plans = find_removable(original.backbone, calibration, gamma_threshold,
                           activation_threshold, fold_padded)
    if not any(plan.removed.any() for plan in plans):
        kept = sum(int(p.kept_constant.sum()) for p in plans)
        raise UserError(
            f'no removable channel in {checkpoint}: no block-internal '
            f'channel is dead on the {probe.num_images} calibration images '
            f'or has |γ| < {gamma_threshold:g} with a constant that folds '
            'exactly' + (f' ({kept} constant ones kept)' if kept else '')
            + '; nothing written')

    widths = block_widths(original.backbone, plans)
    new_cfg = pruned_config(cfg, widths, osp.abspath(out_checkpoint),
                            channels_last)
    new_state = prune_state_dict(ckpt.state, plans)
    pruned = load_detector(new_cfg, new_state, 'the pruned checkpoint')
    before = stage_costs(original.backbone, calibration.shape)
    after = stage_costs(pruned.backbone, calibration.shape)
    check = self_check(original, pruned, compositions(probe))
    evaluation = (None if test_set is None else
                  test_set.evaluate(original, pruned, plans,
                                    activation_threshold))
    result = PruneResult(out_config, out_checkpoint, plans, before, after,
                         calibration.shape, check, evaluation,
                         probe.num_images)
    if write and check.passed:
        save_model(new_cfg, new_state, ckpt.meta, out_config, out_checkpoint)
        result.written = True
    return result


# ------------------------------------------------------------------ output
def _count(n: int) -> str:
    for unit, size in (('G', 1e9), ('M', 1e6), ('k', 1e3)):
        if n >= size:
            return f'{n / size:.2f}{unit}'
    return str(n)


def stage_rows(plans: Sequence[ChannelPlan]) -> dict[str, dict[str, int]]:
    """Per stage (and ``total``): internal channels, removed dead, removed
    constant (folded), constant but kept."""
    rows = {stage: dict(channels=0, dead=0, folded=0, kept_constant=0)
            for stage in (*STAGES, 'total')}
    for plan in plans:
        for row in (rows[plan.bn.stage], rows['total']):
            row['channels'] += plan.channels
            row['dead'] += int(plan.dead.sum())
            row['folded'] += int(plan.folded.sum())
            row['kept_constant'] += int(plan.kept_constant.sum())
    return rows


def _change(before: int, after: int) -> str:
    saved = 100.0 * (before - after) / before if before else 0.0
    return f'{_count(before)} -> {_count(after)} (-{saved:.1f}%)'


def format_result(result: PruneResult) -> str:
    """The per-stage table, the self-check and the evaluation, as printed."""
    rows = stage_rows(result.plans)
    header = ['stage', 'internal channels', 'removed dead',
              'removed |γ| (folded)', 'params', 'FLOPs']
    table = [[stage, str(r['channels']), str(r['dead']),
              str(r['folded']) + (f' (+{r["kept_constant"]} kept)'
                                  if r['kept_constant'] else ''),
              _change(result.before[stage].params,
                      result.after[stage].params),
              _change(result.before[stage].flops, result.after[stage].flops)]
             for stage, r in rows.items()]
    c, h, w = result.input_shape
    check = result.check
    lines = [
        f'block-internal channels removed, dead or constant on '
        f'{result.calibration_images} calibration images; backbone '
        f'parameters and conv FLOPs (multiply-accumulates) per {h}x{w} image',
        text_table([header, *table]),
        f'self-check on the {result.calibration_images} calibration images: '
        f'backbone features differ by {check.features:.2e} at most, '
        f'detections by {check.detections:.2e} (relative; limit '
        f'{CHECK_TOLERANCE:g}; {check.images} passes: each image alone, '
        'batched, and padded to the largest batch'
        + (f'; {check.differing_images} image(s) with other boxes or labels'
           if check.differing_images else '')
        + f'): {"ok" if check.passed else "FAILED"}',
    ]
    ev = result.evaluation
    if ev is None:
        lines.append('test images: none measured (none in the config, or '
                     'none asked for)')
    else:
        removed = sum(ev.removed_dead.values())
        woken = sum(ev.woken.values())
        by_stage = ', '.join(f'{s}: {n}' for s, n in ev.woken.items() if n)
        fmt = (lambda v: '-' if v is None else f'{v:.3f}')
        lines.append(
            f'test images ({ev.images}): bbox mAP {fmt(ev.map_before)} -> '
            f'{fmt(ev.map_after)}; of the {removed} channels removed as '
            f'dead, {woken} are active on some test image'
            + (f' ({by_stage})' if by_stage else '')
            + f', on {ev.images_waking} of {ev.images} images')
    return '\n'.join(lines) + '\n'
