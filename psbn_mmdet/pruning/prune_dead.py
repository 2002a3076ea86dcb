"""Remove a detector's dead backbone channels: ``tools/prune_dead.py``.

A channel inside a ResNet block (a BasicBlock's ``bn1``, a Bottleneck's
``bn1`` and ``bn2``) feeds only the block's next convolution, through a ReLU.
It can go when what it feeds that convolution is known:

* **dead** (the activation criterion of :mod:`psbn_mmdet.collapse`): its BN
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

The pruned backbone is a :class:`~psbn_mmdet.pruned_resnet.PrunedResNet`
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

import contextlib
import copy
import io
import os.path as osp
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.criteria import (ACTIVATION_THRESHOLD, GAMMA_THRESHOLD, ChannelMax,
                       channel_max, collapsed_gamma, dead_activation)
from ..utils.errors import UserError
from ..core.roles import STAGES

#: backbone types whose block-internal channels can be removed
SUPPORTED = ('ResNet', 'ResNetV1d', 'PrunedResNet')
#: relative difference of features and detections the self-check allows
CHECK_TOLERANCE = 1e-5
#: calibration images when the tool is given no number
DEFAULT_NUM_IMAGES = 100
PRUNED_MODULE = 'psbn_mmdet.pruned_resnet'


# ------------------------------------------------------- what can be removed
@dataclass(frozen=True)
class InternalBN:
    """A pre-ReLU BN inside a residual block (backbone module names)."""
    name: str  # 'layer1.0.bn1'
    stage: str
    conv: str  # the conv it normalizes: 'layer1.0.conv1'
    next_conv: str  # the conv its ReLU feeds: 'layer1.0.conv2'
    next_bn: str  # the BN after next_conv: 'layer1.0.bn2'
    #: the next conv adds no padding: a constant input folds exactly
    exact_fold: bool


def internal_bns(backbone: nn.Module) -> list[InternalBN]:
    """The removable positions of an mmdet ResNet, in block order.

    Raises:
        UserError: the backbone has no ResNet blocks.
    """
    from mmdet.models.backbones.resnet import BasicBlock, Bottleneck
    found = []
    for stage in STAGES[1:]:
        layer = getattr(backbone, stage, None)
        if layer is None:
            continue
        for index, block in enumerate(layer):
            prefix = f'{stage}.{index}'
            if isinstance(block, Bottleneck):
                links = [('conv1', block.norm1_name, 'conv2',
                          block.norm2_name),
                         ('conv2', block.norm2_name, 'conv3',
                          block.norm3_name)]
            elif isinstance(block, BasicBlock):
                links = [('conv1', block.norm1_name, 'conv2',
                          block.norm2_name)]
            else:
                raise UserError(f'{prefix} is a {type(block).__name__}, not '
                                'a BasicBlock or Bottleneck')
            if any(m.groups != 1 for m in block.modules()
                   if isinstance(m, nn.Conv2d)):
                raise UserError(f'{prefix} has grouped convolutions')
            for conv, norm, next_conv, next_norm in links:
                # without padding every output sees only image pixels
                exact = all(p == 0 for p in getattr(block,
                                                    next_conv).padding)
                found.append(InternalBN(
                    f'{prefix}.{norm}', stage, f'{prefix}.{conv}',
                    f'{prefix}.{next_conv}', f'{prefix}.{next_norm}',
                    exact))
    if not found:
        raise UserError('no ResNet blocks in the backbone')
    return found


@dataclass
class ChannelPlan:
    """Which channels of one internal BN go, and why."""
    bn: InternalBN
    dead: torch.Tensor  # bool: dead on the calibration images, removed
    #: bool: |γ| < threshold, not dead, removed (a non-zero constant is
    #: folded into next_bn's running_mean)
    folded: torch.Tensor
    #: bool: |γ| < threshold, not dead, left in (a non-zero constant before
    #: a padded conv: folding would change the border)
    kept_constant: torch.Tensor
    constant: torch.Tensor  # ReLU(β) per channel

    @property
    def removed(self) -> torch.Tensor:
        return self.dead | self.folded

    @property
    def keep(self) -> torch.Tensor:
        """Indices of the channels that stay."""
        return (~self.removed).nonzero().flatten()

    @property
    def channels(self) -> int:
        return self.dead.numel()


def find_removable(backbone: nn.Module, dead: Mapping[str, torch.Tensor],
                   gamma_threshold: float = GAMMA_THRESHOLD,
                   fold_padded: bool = False) -> list[ChannelPlan]:
    """A plan per internal BN of ``backbone`` (a loaded mmdet ResNet).

    ``dead``: bool masks by BN name (:func:`~psbn_mmdet.collapse.
    dead_activation` of the calibration maxima); a BN not in it has none.
    ``fold_padded``: also fold non-zero constants through padded convs
    (inexact at the border).  A block keeps at least one channel: when all
    would go, its first dead channel (or first constant one, unfolded) stays.
    """
    plans = []
    for position in internal_bns(backbone):
        bn = backbone.get_submodule(position.name)
        gamma = (bn.weight if bn.weight is not None else
                 torch.ones_like(bn.running_var)).detach().float()
        beta = (bn.bias if bn.bias is not None else
                torch.zeros_like(bn.running_var)).detach().float()
        is_dead = dead.get(position.name, torch.zeros_like(gamma,
                                                           dtype=torch.bool))
        constant = beta.clamp(min=0)
        collapsed = collapsed_gamma(gamma, gamma_threshold) & ~is_dead
        foldable = collapsed & ((constant == 0) | position.exact_fold
                                | fold_padded)
        plan = ChannelPlan(position, is_dead.clone(), foldable,
                           collapsed & ~foldable, constant)
        if bool(plan.removed.all()):
            keep = int((plan.dead if plan.dead.any() else
                        plan.folded).nonzero()[0])
            plan.dead[keep] = False
            plan.folded[keep] = False
        plans.append(plan)
    return plans


# ------------------------------------------------------------------ surgery
def prune_state_dict(state: Mapping[str, torch.Tensor],
                     plans: Sequence[ChannelPlan],
                     prefix: str = 'backbone.') -> dict[str, torch.Tensor]:
    """A new state dict with the planned channels removed and constants
    folded (``prefix``: of the backbone's keys)."""
    state = dict(state)
    for plan in plans:  # block order: a Bottleneck's bn1 before its bn2
        if not plan.removed.any():
            continue
        keep, bn = plan.keep, plan.bn
        conv, next_conv = f'{prefix}{bn.conv}', f'{prefix}{bn.next_conv}'
        state[f'{conv}.weight'] = state[f'{conv}.weight'][keep].clone()
        if f'{conv}.bias' in state:
            state[f'{conv}.bias'] = state[f'{conv}.bias'][keep].clone()
        for key in ('weight', 'bias', 'running_mean', 'running_var'):
            name = f'{prefix}{bn.name}.{key}'
            if name in state:
                state[name] = state[name][keep].clone()
        weight = state[f'{next_conv}.weight']
        mean = f'{prefix}{bn.next_bn}.running_mean'
        if plan.folded.any() and mean in state:
            folded = plan.folded.nonzero().flatten()
            shift = (weight[:, folded].double().sum((2, 3))
                     @ plan.constant[folded].double())
            state[mean] = (state[mean].double() - shift).to(
                state[mean].dtype)
        state[f'{next_conv}.weight'] = weight[:, keep].clone()
    return state


def block_widths(backbone: nn.Module,
                 plans: Sequence[ChannelPlan] = ()) -> list[list]:
    """``PrunedResNet``'s ``block_widths`` after the plans (a block without
    a plan keeps its width: without plans, the backbone's own widths)."""
    width = {plan.bn.name: plan.channels - int(plan.removed.sum())
             for plan in plans}
    widths = []
    for stage in backbone.res_layers:
        stage_widths = []
        for index, block in enumerate(getattr(backbone, stage)):
            names = [block.norm1_name]
            if hasattr(block, 'conv3'):
                names.append(block.norm2_name)
            entry = [width.get(f'{stage}.{index}.{n}',
                               getattr(block, n).num_features) for n in names]
            stage_widths.append(entry[0] if len(entry) == 1 else entry)
        widths.append(stage_widths)
    return widths


def pruned_config(cfg, widths: list[list], load_from: str | None = None,
                  channels_last: bool = False):
    """A new mmengine ``Config``: the backbone a ``PrunedResNet`` of these
    widths (no init_cfg: the weights come from the checkpoint; NHWC inside
    with ``channels_last``), the module that registers it in
    ``custom_imports``."""
    from mmengine.config import Config
    data = cfg.to_dict()
    backbone = data['model']['backbone']
    backbone['type'] = 'PrunedResNet'
    backbone['block_widths'] = widths
    if channels_last:  # otherwise as the config says (PrunedResNet: False)
        backbone['channels_last'] = True
    backbone['init_cfg'] = None
    backbone.pop('pretrained', None)
    imports = data.get('custom_imports') or dict(imports=[])
    modules = list(imports.get('imports', []))
    if PRUNED_MODULE not in modules:
        modules.append(PRUNED_MODULE)
    data['custom_imports'] = dict(imports, imports=modules,
                                  allow_failed_imports=False)
    data['load_from'] = load_from
    data['resume'] = False
    return Config(data)


# -------------------------------------------------------------------- costs
def stage_of(name: str) -> str:
    """The stage of a backbone module name: ``layerN`` or ``stem``."""
    first = name.split('.')[0]
    return first if first in STAGES[1:] else 'stem'


def conv_macs(backbone: nn.Module, input_shape) -> dict[str, int]:
    """Multiply-accumulates of each conv of ``backbone`` for one image of
    ``input_shape`` (C, H, W), by module name."""
    macs, handles = {}, []
    for name, module in backbone.named_modules():
        if isinstance(module, nn.Conv2d):

            def hook(module, args, output, name=name):
                k = module.kernel_size[0] * module.kernel_size[1]
                macs[name] = (output[0].numel() * k * module.in_channels
                              // module.groups)

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            backbone(torch.zeros(1, *input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return macs


@dataclass
class StageCost:
    params: int = 0
    flops: int = 0  # convolutions' multiply-accumulates, per image


def stage_costs(backbone: nn.Module, input_shape) -> dict[str, StageCost]:
    """Parameters and conv FLOPs (multiply-accumulates) per stage and in
    total, for one image of ``input_shape`` (C, H, W)."""
    costs = {stage: StageCost() for stage in STAGES}
    for name, param in backbone.named_parameters():
        costs[stage_of(name)].params += param.numel()
    for name, count in conv_macs(backbone, input_shape).items():
        costs[stage_of(name)].flops += count
    costs['total'] = StageCost(sum(c.params for c in costs.values()),
                               sum(c.flops for c in costs.values()))
    return costs


def removable_flops(backbone: nn.Module, plans: Sequence[ChannelPlan],
                    input_shape) -> dict[str, int]:
    """Conv FLOPs per stage that the plans remove, for one image of
    ``input_shape``, without building the pruned backbone: a removed
    channel takes one output slice of its conv and one input slice of the
    next."""
    macs = conv_macs(backbone, input_shape)
    removed = dict.fromkeys(STAGES, 0)
    for plan in plans:
        count = int(plan.removed.sum())
        if not count:
            continue
        conv = backbone.get_submodule(plan.bn.conv)
        after = backbone.get_submodule(plan.bn.next_conv)
        removed[plan.bn.stage] += (
            macs[plan.bn.conv] * count // conv.out_channels
            + macs[plan.bn.next_conv] * count // after.in_channels)
    return removed


def removable_per_stage(backbone: nn.Module,
                        dead: Mapping[str, torch.Tensor], input_shape,
                        gamma_threshold: float = GAMMA_THRESHOLD
                        ) -> dict[str, dict[str, int]]:
    """What the tool would remove, per stage and ``total``: ``channels``,
    the conv ``flops`` they cost and the stage's ``flops`` in all
    (``stage_flops``), for one image of ``input_shape`` (the report's
    removable column)."""
    plans = find_removable(backbone, dead, gamma_threshold)
    removed = removable_flops(backbone, plans, input_shape)
    costs = stage_costs(backbone, input_shape)
    rows = {stage: dict(channels=0, flops=removed[stage],
                        stage_flops=costs[stage].flops) for stage in STAGES}
    for plan in plans:
        rows[plan.bn.stage]['channels'] += int(plan.removed.sum())
    rows['total'] = {key: sum(row[key] for row in rows.values())
                     for key in ('channels', 'flops', 'stage_flops')}
    return rows


# ------------------------------------------------------------ measurements
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


def _extents(inputs, samples) -> list[tuple[int, int, int, int]]:
    H, W = inputs.shape[-2:]
    return [(*s.metainfo.get('img_shape', (H, W))[:2], H, W)
            for s in samples]


def evaluate(cfg, original, pruned, plans: Sequence[ChannelPlan],
             activation_threshold: float = ACTIVATION_THRESHOLD
             ) -> Evaluation | None:
    """bbox mAP of both detectors on ``cfg``'s test (or val) set with its
    evaluator, and per image which channels removed as dead are active
    (max post-ReLU activation at or above the threshold on the image's own
    pixels).  None when the config has no test data or evaluator."""
    from mmengine.evaluator import Evaluator
    from mmengine.logging import MMLogger
    from mmengine.runner import Runner
    loader_cfg = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    metric_cfg = cfg.get('test_evaluator') or cfg.get('val_evaluator')
    if not loader_cfg or not metric_cfg:
        return None
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' chatter
        loader = Runner.build_dataloader(copy.deepcopy(loader_cfg))
        evaluators = [Evaluator(copy.deepcopy(metric_cfg)) for _ in range(2)]
    for evaluator in evaluators:
        evaluator.dataset_meta = loader.dataset.metainfo
    watched = {plan.bn.name: plan for plan in plans if plan.dead.any()}
    woken = {name: torch.zeros_like(plan.dead)
             for name, plan in watched.items()}
    per_image: dict[str, torch.Tensor] = {}
    extents: list = []

    def hook(name):
        def record(module, args, output):
            per_image[name] = torch.stack([
                channel_max(output[i:i + 1], extents[i:i + 1])
                for i in range(output.shape[0])])
        return record

    handles = [original.backbone.get_submodule(name).register_forward_hook(
        hook(name)) for name in watched]
    result = Evaluation(len(loader.dataset), None, None)
    try:
        for data in loader:
            with torch.inference_mode():
                batch = original.data_preprocessor(data, False)
                extents[:] = _extents(batch['inputs'], batch['data_samples'])
                for model, evaluator in zip((original, pruned), evaluators):
                    out = model.predict(batch['inputs'],
                                        copy.deepcopy(batch['data_samples']))
                    evaluator.process(data_samples=out, data_batch=data)
            active = torch.zeros(len(extents), dtype=torch.bool)
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


# --------------------------------------------------------------------- tool
def _backbone_type(cfg) -> str:
    backbone = cfg.get('model', {}).get('backbone')
    if backbone is None:
        raise UserError('the config has no model.backbone')
    kind = str(backbone.get('type', '')).split('.')[-1]
    if (kind not in SUPPORTED or backbone.get('dcn') is not None
            or backbone.get('plugins') is not None):
        what = kind if kind not in SUPPORTED else f'{kind} with dcn or plugins'
        raise UserError(f'unsupported backbone {what}: prune_dead supports '
                        f'mmdet\'s {", ".join(SUPPORTED)} without dcn or '
                        'plugins')
    return kind


def _state_dict(checkpoint, path: str) -> tuple[dict, dict]:
    """The state dict and meta of a loaded checkpoint."""
    if isinstance(checkpoint, Mapping) and isinstance(
            checkpoint.get('state_dict'), Mapping):
        return dict(checkpoint['state_dict']), dict(
            checkpoint.get('meta') or {})
    if isinstance(checkpoint, Mapping) and any(
            torch.is_tensor(v) for v in checkpoint.values()):
        return dict(checkpoint), {}
    raise UserError(f'{path}: not a checkpoint with a state dict')


def _calibration_config(cfg, config_path: str, directory: str) -> str:
    """A data config for :class:`~psbn_mmdet.report.ActivationProbe`: the
    training images of ``cfg`` through its test pipeline."""
    from mmengine.config import Config
    train = cfg.get('train_dataloader', {}).get('dataset')
    test = (cfg.get('test_dataloader') or cfg.get('val_dataloader') or {}
            ).get('dataset', {})
    pipeline = test.get('pipeline') or cfg.get('test_pipeline')
    if not train or 'pipeline' not in train or not pipeline:
        raise UserError(f'{config_path}: no train_dataloader.dataset with a '
                        'pipeline and no test pipeline to calibrate with; '
                        'give --data-config')
    dataset = copy.deepcopy(train)
    dataset['pipeline'] = copy.deepcopy(pipeline)
    dataset['test_mode'] = True
    dataset.pop('filter_cfg', None)
    path = osp.join(directory, osp.splitext(osp.basename(config_path))[0]
                    + '_train_images.py')
    Config(dict(test_dataloader=dict(dataset=dataset))).dump(path)
    return path


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


def _load_detector(cfg, state: dict, what: str):
    from ..io.checkpoint import check_state_dict
    from ..export import _detector
    model = _detector(cfg)
    check_state_dict(model.state_dict(), state, what)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def _check_arguments(num_images, batch_size, gamma_threshold,
                     activation_threshold) -> None:
    if num_images is not None and num_images < 1:
        raise UserError(f'--num-images must be at least 1 (got {num_images})')
    if batch_size < 1:
        raise UserError(f'--batch-size must be at least 1 (got {batch_size})')
    if not gamma_threshold > 0:
        raise UserError(f'--gamma-thr must be positive (got {gamma_threshold})')
    if not activation_threshold > 0:
        raise UserError('--act-thr must be positive '
                        f'(got {activation_threshold})')


def prune_dead(config: str, checkpoint: str, out_dir: str, *,
               data_config: str | None = None,
               num_images: int | None = DEFAULT_NUM_IMAGES,
               batch_size: int = 4,
               gamma_threshold: float = GAMMA_THRESHOLD,
               activation_threshold: float = ACTIVATION_THRESHOLD,
               fold_padded: bool = False, channels_last: bool = False,
               evaluate_map: bool = True, write: bool = True,
               out=None) -> PruneResult:
    """Prune, check, evaluate, print, then write ``OUT_DIR/<name>_pruned.py``
    and ``.pth`` (both or neither; nothing when the self-check fails).

    Calibration images: ``data_config``'s test (or val) set, like the
    report's; without it, the first ``num_images`` training images of
    ``config`` through its test pipeline.  With ``channels_last`` the pruned
    backbone computes in NHWC (:class:`~psbn_mmdet.pruned_resnet.PrunedResNet`);
    the self-check then covers that path.

    Raises:
        UserError: bad input (a config or checkpoint that cannot be read or
            do not match, an unsupported backbone, no removable channel, an
            out dir that cannot be written), before anything is written.
    """
    from ..io.checkpoint import safe_load
    from ..utils.config import load_config
    from ..utils.files import check_writable, write_atomically
    from ..analysis.report import ActivationProbe, _mmdet_registries
    import psbn_mmdet.models.backbones.pruned_resnet  # noqa: F401  registers PrunedResNet
    out = out or sys.stdout
    _check_arguments(num_images, batch_size, gamma_threshold,
                     activation_threshold)
    check_writable(out_dir, is_dir=True)
    cfg = load_config(config)
    _backbone_type(cfg)
    state, meta = _state_dict(safe_load(checkpoint), checkpoint)
    _mmdet_registries()
    original = _load_detector(cfg, state, f'{checkpoint} does not match the '
                              f'model of {config}')
    name = osp.splitext(osp.basename(config))[0]
    out_config = osp.join(out_dir, f'{name}_pruned.py')
    out_checkpoint = osp.join(out_dir, f'{name}_pruned.pth')

    with tempfile.TemporaryDirectory() as tmp:  # the data set is read here
        probe = ActivationProbe(
            config, data_config or _calibration_config(cfg, config, tmp),
            num_images, batch_size)

    def batches():
        for data in probe.loader:
            with torch.inference_mode():
                batch = original.data_preprocessor(data, False)
            yield batch['inputs'], batch['data_samples']

    positions = internal_bns(original.backbone)
    input_shape = None
    with ChannelMax({p.name: original.backbone.get_submodule(p.name)
                     for p in positions}) as maxima, torch.inference_mode():
        for inputs, samples in batches():
            maxima.extents = _extents(inputs, samples)
            original.backbone(inputs)
            input_shape = input_shape or tuple(inputs.shape[1:])
    dead = {n: dead_activation(m, activation_threshold)
            for n, m in maxima.maxima.items()}
    plans = find_removable(original.backbone, dead, gamma_threshold,
                           fold_padded)
    if not any(plan.removed.any() for plan in plans):
        kept = sum(int(p.kept_constant.sum()) for p in plans)
        raise UserError(
            f'no removable channel in {checkpoint}: no block-internal '
            f'channel is dead on the {probe.num_images} calibration images '
            f'or has |γ| < {gamma_threshold:g}'
            + (f' with a constant that folds exactly ({kept} before padded '
               'convs kept)' if kept else '') + '; nothing written')

    widths = block_widths(original.backbone, plans)
    new_cfg = pruned_config(cfg, widths, osp.abspath(out_checkpoint),
                            channels_last)
    new_state = prune_state_dict(state, plans)
    pruned = _load_detector(new_cfg, new_state, 'the pruned checkpoint')
    before = stage_costs(original.backbone, input_shape)
    after = stage_costs(pruned.backbone, input_shape)
    check = self_check(original, pruned, batches())
    evaluation = (evaluate(cfg, original, pruned, plans,
                           activation_threshold) if evaluate_map else None)
    result = PruneResult(out_config, out_checkpoint, plans, before, after,
                         input_shape, check, evaluation, probe.num_images)
    out.write(format_result(result))
    if write and check.passed:
        weights = io.BytesIO()
        meta = {k: v for k, v in meta.items() if k != 'cfg'}
        meta['cfg'] = new_cfg.pretty_text
        torch.save({'meta': meta, 'state_dict': new_state}, weights)
        write_atomically({out_config: new_cfg.pretty_text.encode(),
                          out_checkpoint: weights.getvalue()})
        result.written = True
        out.write(f'wrote {out_config}\nwrote {out_checkpoint}\n')
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
    from ..analysis.report import _table
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
        _table(header, table),
        f'self-check on the {check.images} calibration images: backbone '
        f'features differ by {check.features:.2e} at most, detections by '
        f'{check.detections:.2e} (relative; limit {CHECK_TOLERANCE:g}'
        + (f'; {check.differing_images} image(s) with other boxes or labels'
           if check.differing_images else '')
        + f'): {"ok" if check.passed else "FAILED"}',
    ]
    ev = result.evaluation
    if ev is None:
        lines.append('test images: none in the config, mAP not measured')
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
