"""Collapsed BN channels per ResNet stage: by parameters and by activations.

Two criteria, counted with :mod:`psbn_mmdet.collapse` so that they mean what
the training hooks mean:

* parameters (every BN): channels with ``|γ| < gamma_threshold``.  They are
  read straight from the state dict (memory-mapped); no model is built and
  neither mmdet nor mmcv is imported, so on a ResNet-50 the counting takes
  milliseconds and start-up (importing torch) dominates.
* activations (pre-ReLU BNs, when a data config is given): channels whose
  maximum post-ReLU activation over N images stays below
  ``activation_threshold``.  The backbone is built from an mmdet config and fed
  by the config's own test pipeline and data preprocessor, so it sees the
  images exactly as at inference; each image's maximum is taken over its own
  pixels, so batch padding never counts.

A checkpoint may be an mmengine/mmdet file (``state_dict`` with ``backbone.``
keys), a torchvision ResNet state dict (``conv1.weight``, ``bn1.weight``,
``layer1.0.bn1.weight``...) or a bare state dict (a detector's, a
``module.``-wrapped one).  BN and psBN checkpoints have the same keys.  Stages
and roles come from the BN names (:func:`psbn_mmdet.roles.roles_from_names`).

:func:`run` is what ``tools/collapse_report.py`` calls.  Bad input raises
:class:`ReportError` with a one-line message, before any file is written.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.criteria import (ACTIVATION_THRESHOLD, GAMMA_THRESHOLD, ChannelMax,
                       collapsed_gamma, dead_activation)
from ..io.checkpoint import check_state_dict, safe_load
from ..utils.config import load_config
from ..utils.errors import UserError, one_line
from ..utils.files import check_writable, write_atomically
from ..core.roles import PRE_RELU, STAGES, BNRole, roles_from_names

DEFAULT_BATCH_SIZE = 4
ROW_KEYS = ('name', 'bn_layers', 'channels', 'collapsed_gamma',
            'collapsed_gamma_pct', 'dead_activation', 'dead_activation_pct',
            'nonfinite', 'nonfinite_pct')
#: the row of BN layers the report could not place in a ResNet stage
OTHER = 'other'



class ReportError(UserError):
    """Bad input to the report; the message is one line for the user."""


# ---------------------------------------------------------------- checkpoints
@dataclass
class Checkpoint:
    """The backbone part of a checkpoint's state dict."""
    path: str
    format: str  # 'mmengine', 'torchvision' or 'bare'
    prefix: str  # of the backbone keys: 'backbone.' or ''
    state: dict[str, torch.Tensor]  # backbone keys, prefix removed


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint and keep its backbone's tensors; detect the format."""
    path = Path(path)
    obj = safe_load(path, mmap=True)
    fmt = 'bare'
    if isinstance(obj, Mapping) and isinstance(obj.get('state_dict'), Mapping):
        fmt, obj = 'mmengine', obj['state_dict']
    if not isinstance(obj, Mapping):
        raise ReportError(f'{path}: not a checkpoint (no state dict in it)')
    state = {k.removeprefix('module.'): v for k, v in obj.items()
             if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not state:
        raise ReportError(f'{path}: not a checkpoint (no tensors in it)')
    in_detector = any(k.startswith('backbone.') for k in state)
    prefix = 'backbone.' if in_detector else ''
    backbone = {k[len(prefix):]: v for k, v in state.items()
                if k.startswith(prefix)}
    if (fmt == 'bare' and not prefix and 'conv1.weight' in backbone
            and any(k.startswith('layer1.') for k in backbone)):
        fmt = 'torchvision'
    return Checkpoint(str(path), fmt, prefix, backbone)


# ------------------------------------------------------------------- counting
@dataclass
class BNLayer:
    """One BN of the backbone and which of its channels meet each criterion."""
    name: str  # module name in the checkpoint, e.g. 'backbone.layer1.0.bn1'
    stage: str
    role: str
    gamma: torch.Tensor
    beta: torch.Tensor
    collapsed: torch.Tensor  # bool per channel: |γ| < gamma threshold
    dead: torch.Tensor | None = None  # bool per channel; pre-ReLU with data
    #: bool per channel: γ or β NaN/Inf, or (measured) a NaN/Inf activation
    nonfinite: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.nonfinite is None:
            self.nonfinite = ~(torch.isfinite(self.gamma)
                               & torch.isfinite(self.beta))

    @property
    def channels(self) -> int:
        return self.gamma.numel()


def bn_layers(ckpt: Checkpoint,
              gamma_threshold: float = GAMMA_THRESHOLD) -> dict[str, BNLayer]:
    """``{backbone module name: BNLayer}`` of every BN, stage order.

    BNs that fit no ResNet stage are counted under :data:`OTHER` (their role
    unknown: never measured for dead channels), never dropped.
    """
    names = [k.removesuffix('.running_var') for k in ckpt.state
             if k.endswith('.running_var')]
    if not names:
        raise ReportError(f'{ckpt.path}: no BN layers in it')
    roles = roles_from_names(names)
    roles.update({n: BNRole(OTHER, None) for n in names if n not in roles})
    layers = {}  # by stage, then in state-dict order
    for name in sorted(roles, key=lambda n: (_stage_key(roles[n].stage),
                                             names.index(n))):
        running_var = ckpt.state[f'{name}.running_var']
        gamma = ckpt.state.get(f'{name}.weight', torch.ones_like(running_var))
        beta = ckpt.state.get(f'{name}.bias', torch.zeros_like(running_var))
        gamma, beta = gamma.float().flatten(), beta.float().flatten()
        layers[name] = BNLayer(ckpt.prefix + name, roles[name].stage,
                               roles[name].role, gamma, beta,
                               collapsed_gamma(gamma, gamma_threshold))
    return layers


def _stage_key(stage: str) -> tuple[int, str]:
    return (STAGES.index(stage), '') if stage in STAGES else (len(STAGES),
                                                              stage)


def _pct(count: int, total: int) -> float:
    return 100.0 * count / total if total else 0.0


@dataclass
class Report:
    """Counts of one checkpoint; ``to_dict`` is the JSON schema."""
    checkpoint: str
    format: str
    gamma_threshold: float
    activation_threshold: float
    num_images: int | None
    layers: list[BNLayer]
    #: what tools/prune_dead.py would remove, by stage and 'total'
    #: (:func:`psbn_mmdet.prune.removable_per_stage`); measured with data
    removable: dict[str, dict[str, int]] | None = None

    def stages(self) -> list[str]:
        return sorted({layer.stage for layer in self.layers}, key=_stage_key)

    def row(self, name: str, layers: list[BNLayer]) -> dict:
        channels = sum(layer.channels for layer in layers)
        collapsed = sum(int(layer.collapsed.sum()) for layer in layers)
        nonfinite = sum(int(layer.nonfinite.sum()) for layer in layers)
        row = dict(name=name, bn_layers=len(layers), channels=channels,
                   collapsed_gamma=collapsed,
                   collapsed_gamma_pct=_pct(collapsed, channels),
                   dead_activation=None, dead_activation_pct=None,
                   nonfinite=nonfinite, nonfinite_pct=_pct(nonfinite,
                                                           channels))
        pre_relu = [layer for layer in layers if layer.role == PRE_RELU]
        if self.num_images is not None and pre_relu:
            dead = sum(int(layer.dead.sum()) for layer in pre_relu)
            row.update(dead_activation=dead, dead_activation_pct=_pct(
                dead, sum(layer.channels for layer in pre_relu)))
        if self.removable is not None:
            entry = self.removable.get(name, {})
            row.update(removable=entry.get('channels', 0),
                       removable_flops_pct=_pct(entry.get('flops', 0),
                                                entry.get('stage_flops', 0)))
        return row

    def stage_rows(self) -> list[dict]:
        return [self.row(stage, [l for l in self.layers if l.stage == stage])
                for stage in self.stages()]

    def total_row(self) -> dict:
        return self.row('total', self.layers)

    def to_dict(self) -> dict:
        return {
            'checkpoint': self.checkpoint,
            'gamma_threshold': self.gamma_threshold,
            'activation_threshold': self.activation_threshold,
            'num_images': self.num_images,
            'stages': self.stage_rows(),
            'total': self.total_row(),
            'layers': [{
                'name': layer.name, 'stage': layer.stage, 'role': layer.role,
                'channels': layer.channels,
                'collapsed_gamma': int(layer.collapsed.sum()),
                'dead_activation': None if layer.dead is None else int(
                    layer.dead.sum()),
                'nonfinite': int(layer.nonfinite.sum()),
            } for layer in self.layers],
        }


# ---------------------------------------------------------------- activations
def _mmdet_registries():
    """mmdet's DATASETS and MODELS with every mmdet module registered."""
    from mmdet.registry import DATASETS, MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    return DATASETS, MODELS


def build_backbone(config, ckpt: Checkpoint) -> torch.nn.Module:
    """``cfg.model.backbone`` of ``config`` with the checkpoint's weights
    loaded strictly (a torchvision classifier's ``fc`` is left out)."""
    cfg = load_config(config)
    _, models = _mmdet_registries()
    backbone_cfg = cfg.get('model', {}).get('backbone')
    if backbone_cfg is None:
        raise ReportError(f'{config}: no model.backbone in it')
    try:
        backbone = models.build(backbone_cfg)
    except Exception as error:  # noqa: BLE001
        raise ReportError(f'{config}: cannot build model.backbone '
                          f'({one_line(error, with_type=False)})') from None
    expected = backbone.state_dict()
    state = {k: v for k, v in ckpt.state.items()
             if k in expected or not k.startswith('fc.')}
    check_state_dict(expected, state, f'the backbone of {config} does not '
                     f'match {ckpt.path}', prefix=ckpt.prefix)
    backbone.load_state_dict(state, strict=True)
    backbone.eval()  # mmdet's ResNet.train() returns None, so not chained
    return backbone


class ActivationProbe:
    """The first N images of a config's test (or val) set, ready to be run
    through backbones: the data set and data preprocessor are built once.

    The data preprocessor (normalization, padding, batching) is the backbone
    config's ``model.data_preprocessor`` when it has one, else the data
    config's: normalization belongs to the weights.
    """

    def __init__(self, model_config, data_config, num_images: int | None,
                 batch_size: int = DEFAULT_BATCH_SIZE):
        from mmengine.dataset import pseudo_collate
        self.model_config = model_config
        data_cfg = load_config(data_config)
        model_cfg = (data_cfg if model_config == data_config else
                     load_config(model_config))
        datasets, models = _mmdet_registries()
        loader_cfg = (data_cfg.get('test_dataloader')
                      or data_cfg.get('val_dataloader'))
        if not loader_cfg or 'dataset' not in loader_cfg:
            raise ReportError(f'{data_config}: no test_dataloader or '
                              'val_dataloader with a dataset in it')
        try:  # pycocotools' chatter would land in the report on stdout
            with contextlib.redirect_stdout(io.StringIO()):
                dataset = datasets.build(loader_cfg['dataset'])
        except Exception as error:  # noqa: BLE001
            raise ReportError(f'{data_config}: cannot build the data set '
                              f'({one_line(error, with_type=False)})') from None
        if len(dataset) == 0:
            raise ReportError(f'{data_config}: the data set has no images')
        count = min(num_images or len(dataset), len(dataset))
        missing = [info['img_path'] for info in
                   (dataset.get_data_info(i) for i in range(count))
                   if not Path(info.get('img_path', '')).is_file()]
        if missing:
            raise ReportError(f'{data_config}: cannot read the images: '
                              f'{len(missing)} of {count} missing (first: '
                              f'{missing[0]})')
        pre_cfg = (model_cfg.get('model', {}).get('data_preprocessor')
                   or data_cfg.get('model', {}).get('data_preprocessor'))
        if pre_cfg is None:
            raise ReportError(f'{model_config}: no model.data_preprocessor')
        self.preprocessor = models.build(pre_cfg)
        self.num_images = min(num_images or len(dataset), len(dataset))
        if num_images and num_images > len(dataset):
            print(f'note: {data_config} has {len(dataset)} images; using all',
                  file=sys.stderr)
        self.loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, range(self.num_images)),
            batch_size=batch_size, collate_fn=pseudo_collate)

    def batches(self):
        """Preprocessed batches: ``(inputs, extents)``, extents as
        :func:`psbn_mmdet.collapse.channel_max` takes them."""
        for data in self.loader:
            data = self.preprocessor(data, False)
            inputs = data['inputs']
            H, W = inputs.shape[-2:]
            extents = [(*sample.metainfo.get('img_shape', (H, W))[:2], H, W)
                       for sample in data['data_samples']]
            yield inputs, extents

    def max_activations(self, ckpt: Checkpoint,
                        names: list[str]) -> dict[str, torch.Tensor]:
        """Per-channel maxima of the named BNs' outputs over the images."""
        from mmengine.utils import ProgressBar
        backbone = build_backbone(self.model_config, ckpt)
        collector = ChannelMax({n: backbone.get_submodule(n) for n in names})
        progress = ProgressBar(self.num_images, file=sys.stderr)
        try:
            with torch.inference_mode():
                for inputs, extents in self.batches():
                    collector.extents = extents
                    backbone(inputs)
                    progress.update(len(extents))
        finally:
            collector.remove()
            print(file=sys.stderr)
        return collector.maxima


# ---------------------------------------------------------------------- report
def collapse_report(ckpt: Checkpoint,
                    gamma_threshold: float = GAMMA_THRESHOLD,
                    activation_threshold: float = ACTIVATION_THRESHOLD,
                    probe: ActivationProbe | None = None) -> Report:
    """Both criteria for one checkpoint; activations only with a probe."""
    layers = bn_layers(ckpt, gamma_threshold)
    if probe is not None:
        pre_relu = [n for n, layer in layers.items() if layer.role == PRE_RELU]
        maxima = probe.max_activations(ckpt, pre_relu)
        for name in pre_relu:
            layer = layers[name]
            layer.dead = dead_activation(maxima[name], activation_threshold)
            layer.nonfinite = layer.nonfinite | ~torch.isfinite(maxima[name])
    removable = None if probe is None else _removable(
        probe, ckpt, {n: layers[n].dead for n in pre_relu}, gamma_threshold)
    return Report(ckpt.path, ckpt.format, gamma_threshold,
                  activation_threshold,
                  None if probe is None else probe.num_images,
                  list(layers.values()), removable)


def _removable(probe: ActivationProbe, ckpt: Checkpoint, dead,
               gamma_threshold: float) -> dict | None:
    """The removable column: channels and FLOPs (at the first batch's
    input size) per stage; None for backbones the pruning tool does not
    support."""
    from ..pruning.prune_dead import SUPPORTED, removable_per_stage
    backbone = build_backbone(probe.model_config, ckpt)
    if type(backbone).__name__ not in SUPPORTED:
        return None
    inputs, _ = next(iter(probe.batches()))
    return removable_per_stage(backbone, dead, tuple(inputs.shape[1:]),
                               gamma_threshold)


def _cell(count, pct) -> str:
    return '-' if count is None else f'{count} ({pct:.2f}%)'


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows])
              for i in range(len(header))]
    return '\n'.join(
        '  '.join(cell.ljust(w) if i == 0 else cell.rjust(w)
                  for i, (cell, w) in enumerate(zip(row, widths)))
        for row in [header, *rows])


def _describe(report: Report) -> str:
    text = (f'{report.checkpoint} ({report.format}); '
            f'collapsed: |γ| < {report.gamma_threshold:g}')
    if report.num_images is not None:
        text += (f'; dead: pre-ReLU max activation < '
                 f'{report.activation_threshold:g} over '
                 f'{report.num_images} images')
    return text


def format_table(report: Report, other: Report | None = None) -> str:
    """The per-stage table (plus a total row) printed on the terminal."""
    rows_a = report.stage_rows() + [report.total_row()]
    if other is None:
        header = ['stage', 'BN layers', 'channels', 'collapsed |γ|',
                  'dead (pre-ReLU)', 'non-finite']
        rows = [[r['name'], str(r['bn_layers']), str(r['channels']),
                 _cell(r['collapsed_gamma'], r['collapsed_gamma_pct']),
                 _cell(r['dead_activation'], r['dead_activation_pct']),
                 _cell(r['nonfinite'], r['nonfinite_pct'])]
                for r in rows_a]
        if report.removable is not None:
            header.append('removable (FLOPs)')
            for row, r in zip(rows, rows_a):
                row.append(f'{r["removable"]} '
                           f'({r["removable_flops_pct"]:.2f}%)')
        return f'{_describe(report)}\n{_table(header, rows)}\n'
    rows_b = {r['name']: r for r in other.stage_rows() + [other.total_row()]}
    names = [r['name'] for r in rows_a] + [n for n in rows_b if n not in
                                           {r['name'] for r in rows_a}]
    rows_a = {r['name']: r for r in rows_a}
    empty = dict.fromkeys(ROW_KEYS)
    header = ['stage', 'channels a/b', 'collapsed |γ| a', 'b', 'b-a',
              'dead a', 'b', 'b-a', 'non-finite a', 'b', 'b-a']
    rows = []
    for name in names:
        a, b = rows_a.get(name, empty), rows_b.get(name, empty)
        row = [name, f'{a["channels"] or 0}/{b["channels"] or 0}']
        for key in ('collapsed_gamma', 'dead_activation', 'nonfinite'):
            row += [_cell(a[key], a[f'{key}_pct']),
                    _cell(b[key], b[f'{key}_pct'])]
            row.append('-' if a[key] is None or b[key] is None else
                       f'{b[key] - a[key]:+d}')
        rows.append(row)
    return (f'a: {_describe(report)}\nb: {_describe(other)}\n'
            f'{_table(header, rows)}\n')


def _warn_about(report: Report) -> None:
    """One line on stderr each for unplaced BNs and non-finite channels."""
    other = [layer for layer in report.layers if layer.stage == OTHER]
    if other:
        print(f'note: {report.checkpoint}: {len(other)} BN layer(s) outside '
              f'a ResNet stage (first: {other[0].name}) are counted under '
              f"'{OTHER}'; dead channels are measured in ResNet stages only",
              file=sys.stderr)
    nonfinite = report.total_row()['nonfinite']
    if nonfinite:
        print(f'warning: {report.checkpoint}: {nonfinite} channel(s) with '
              'NaN or Inf γ, β or activations (column non-finite); they are '
              'neither collapsed nor dead', file=sys.stderr)


def _csv_text(reports: list[Report]) -> str:
    text = io.StringIO()
    extra = (['removable', 'removable_flops_pct'] if any(
        report.removable is not None for report in reports) else [])
    writer = csv.DictWriter(text, ['checkpoint', *ROW_KEYS, *extra],
                            lineterminator='\n')
    writer.writeheader()
    for report in reports:
        for row in report.stage_rows() + [report.total_row()]:
            writer.writerow({'checkpoint': report.checkpoint, **row})
    return text.getvalue()


def _check_arguments(num_images, data_config, gamma_threshold,
                     activation_threshold, batch_size) -> None:
    if num_images is not None and num_images < 1:
        raise ReportError(
            f'--num-images must be at least 1 (got {num_images})')
    if num_images is not None and data_config is None:
        raise ReportError('--num-images needs --data-config')
    if not gamma_threshold > 0:
        raise ReportError(
            f'--gamma-thr must be positive (got {gamma_threshold})')
    if not activation_threshold > 0:
        raise ReportError('--act-thr must be positive '
                          f'(got {activation_threshold})')
    if batch_size < 1:
        raise ReportError(
            f'--batch-size must be at least 1 (got {batch_size})')


def run(checkpoint, *, compare=None, config=None, data_config=None,
        num_images: int | None = None,
        gamma_threshold: float = GAMMA_THRESHOLD,
        activation_threshold: float = ACTIVATION_THRESHOLD,
        batch_size: int = DEFAULT_BATCH_SIZE, json_path=None, csv_path=None,
        plot_dir=None, out=None) -> dict:
    """Report on ``checkpoint`` (and ``compare``): print, then write files.

    ``config`` gives the backbone (checked against the checkpoint), and
    ``data_config`` the images; either stands in for the other.  Returns the
    JSON object: one report, or ``{"a": ..., "b": ...}`` with ``compare``.
    Every check runs and every output is rendered before anything is written.
    """
    out = out or sys.stdout
    _check_arguments(num_images, data_config, gamma_threshold,
                     activation_threshold, batch_size)
    for path in (json_path, csv_path):
        if path:
            check_writable(path)
    if plot_dir:
        check_writable(plot_dir, is_dir=True)
    ckpts = [load_checkpoint(path) for path in (checkpoint, compare) if path]
    probe = None
    if data_config is not None:
        probe = ActivationProbe(config or data_config, data_config,
                                num_images, batch_size)
    elif config is not None:
        for ckpt in ckpts:
            build_backbone(config, ckpt)
    reports = [collapse_report(ckpt, gamma_threshold, activation_threshold,
                               probe) for ckpt in ckpts]
    result = (reports[0].to_dict() if len(reports) == 1 else
              {'a': reports[0].to_dict(), 'b': reports[1].to_dict()})

    files: dict[Path, bytes] = {}
    if json_path:
        files[Path(json_path)] = (json.dumps(result, indent=2) + '\n').encode()
    if csv_path:
        files[Path(csv_path)] = _csv_text(reports).encode()
    if plot_dir:
        from .plots import plot_reports
        files.update({Path(plot_dir) / name: png for name, png in
                      plot_reports(*reports).items()})
    out.write(format_table(*reports))
    for report in reports:
        _warn_about(report)
    write_atomically(files)
    for path in files:
        print(f'wrote {path}', file=out)
    return result
