"""Collapsed BN channels per ResNet stage: by parameters and by activations.

Two criteria, counted with :mod:`psbn_mmdet.core.criteria` so that they mean what
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
and roles come from the BN names (:func:`psbn_mmdet.core.roles.roles_from_names`).

:func:`collapse_report` counts one checkpoint; :func:`format_table`,
:func:`notes` and :func:`report_files` render what ``tools/collapse_report.py``
prints and writes.  Bad input raises :class:`~psbn_mmdet.utils.errors.UserError`
with a one-line message.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.criteria import (ACTIVATION_THRESHOLD, GAMMA_THRESHOLD,
                             collapsed_gamma, dead_activation)
from ..core.revival import (DEFAULT_REVIVAL, first_window_rule, fresh_rule,
                            units_of)
from ..core.roles import PRE_RELU, STAGES, BNRole, roles_from_names
from ..core.statistics import is_trainable
from ..io.builders import load_backbone
from ..io.checkpoint import Checkpoint
from ..utils.errors import UserError
from ..utils.table import text_table
from .probe import ActivationProbe

ROW_KEYS = ('name', 'bn_layers', 'channels', 'collapsed_gamma',
            'collapsed_gamma_pct', 'dead_activation', 'dead_activation_pct',
            'nonfinite', 'nonfinite_pct')
#: the row of BN layers the report could not place in a ResNet stage
OTHER = 'other'


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
    #: measured pre-ReLU layers: the rule psBN's default revival applies to
    #: their dead channels (``'shift'`` where it has no unit), None if the
    #: layer is frozen (never revived)
    revival: str | None = None

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
    state, prefix = ckpt.backbone_state(), ckpt.backbone_prefix
    names = [k.removesuffix('.running_var') for k in state
             if k.endswith('.running_var')]
    if not names:
        raise UserError(f'{ckpt.path}: no BN layers in it')
    roles = roles_from_names(names)
    roles.update({n: BNRole(OTHER, None) for n in names if n not in roles})
    layers = {}  # by stage, then in state-dict order
    for name in sorted(roles, key=lambda n: (_stage_key(roles[n].stage),
                                             names.index(n))):
        running_var = state[f'{name}.running_var']
        gamma = state.get(f'{name}.weight', torch.ones_like(running_var))
        beta = state.get(f'{name}.bias', torch.zeros_like(running_var))
        gamma, beta = gamma.float().flatten(), beta.float().flatten()
        layers[name] = BNLayer(prefix + name, roles[name].stage,
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
    #: (``channels``, ``flops``, ``stage_flops``), set by the report tool
    #: from :func:`psbn_mmdet.pruning.removable_per_stage` when it measured
    #: activations
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
                'revival': layer.revival,
            } for layer in self.layers],
            'would_revive': self.would_revive(),
        }

    def would_revive(self) -> dict | None:
        """Measured reports: the dead channels psBN's default revival
        (:data:`~psbn_mmdet.core.revival.DEFAULT_REVIVAL`) would revive at
        its first window, by the rule applied (``'frozen'``: in frozen
        layers, never revived); None without activations."""
        if self.num_images is None:
            return None
        counts = {'rule': DEFAULT_REVIVAL,
                  fresh_rule(DEFAULT_REVIVAL): 0, 'shift': 0,
                  'frozen': 0}
        for layer in self.layers:
            if layer.dead is not None:
                counts[layer.revival or 'frozen'] += int(layer.dead.sum())
        return counts


# ---------------------------------------------------------------------- report
def collapse_report(ckpt: Checkpoint,
                    gamma_threshold: float = GAMMA_THRESHOLD,
                    activation_threshold: float = ACTIVATION_THRESHOLD,
                    probe: ActivationProbe | None = None, config=None,
                    progress: Callable[[int], None] | None = None) -> Report:
    """Both criteria for one checkpoint; activations only with a probe,
    through the backbone of ``config`` (default: the probe's model config)
    loaded with the checkpoint's weights."""
    layers = bn_layers(ckpt, gamma_threshold)
    if probe is not None:
        backbone = load_backbone(config or probe.model_config, ckpt)
        pre_relu = [n for n, layer in layers.items() if layer.role == PRE_RELU]
        maxima = probe.max_activations(backbone, pre_relu, progress)
        units, modules = units_of(backbone), dict(backbone.named_modules())
        for name in pre_relu:
            layer = layers[name]
            layer.dead = dead_activation(maxima[name], activation_threshold)
            layer.nonfinite = layer.nonfinite | ~torch.isfinite(maxima[name])
            layer.revival = (first_window_rule(DEFAULT_REVIVAL,
                                               units.get(name))
                             if is_trainable(modules[name]) else None)
    return Report(ckpt.path, ckpt.format, gamma_threshold,
                  activation_threshold,
                  None if probe is None else probe.num_images,
                  list(layers.values()))


def _cell(count, pct) -> str:
    return '-' if count is None else f'{count} ({pct:.2f}%)'


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
        return f'{_describe(report)}\n{text_table([header, *rows])}\n'
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
            f'{text_table([header, *rows])}\n')


def notes(report: Report) -> list[str]:
    """What the tool says on stderr about a report: BNs outside a ResNet
    stage, the dead channels psBN would revive, channels with non-finite
    values."""
    lines = []
    other = [layer for layer in report.layers if layer.stage == OTHER]
    if other:
        lines.append(f'note: {report.checkpoint}: {len(other)} BN layer(s) '
                     f'outside a ResNet stage (first: {other[0].name}) are '
                     f"counted under '{OTHER}'; dead channels are measured "
                     'in ResNet stages only')
    revive = report.would_revive()
    fresh = fresh_rule(DEFAULT_REVIVAL)
    if revive and revive[fresh] + revive['shift']:
        rule = revive['rule']
        lines.append(
            f'note: {report.checkpoint}: psBN (revival={rule!r}, the '
            f'default) would revive {revive[fresh] + revive["shift"]} dead '
            f'channel(s) at its first window: {revive[fresh]} re-initialized '
            f'(ResNet blocks\' bn1/bn2), {revive["shift"]} shifted (no '
            f'layer to re-initialize with: the stem, or a frozen conv)'
            + (f'; {revive["frozen"]} in frozen layers stay dead'
               if revive['frozen'] else ''))
    nonfinite = report.total_row()['nonfinite']
    if nonfinite:
        lines.append(f'warning: {report.checkpoint}: {nonfinite} channel(s) '
                     'with NaN or Inf γ, β or activations (column '
                     'non-finite); they are neither collapsed nor dead')
    return lines


def csv_text(reports: list[Report]) -> str:
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


def report_json(reports: list[Report]) -> dict:
    """The JSON object the tool writes: one report, or ``{"a": ..., "b":
    ...}`` for two."""
    return (reports[0].to_dict() if len(reports) == 1 else
            {'a': reports[0].to_dict(), 'b': reports[1].to_dict()})


def report_files(reports: list[Report], json_path=None, csv_path=None,
                 plot_dir=None, labels=None) -> dict[Path, bytes]:
    """The files asked for, rendered (nothing written): JSON, CSV, plots
    (``labels``: of the reports in the plots)."""
    files: dict[Path, bytes] = {}
    if json_path:
        files[Path(json_path)] = (json.dumps(report_json(reports), indent=2)
                                  + '\n').encode()
    if csv_path:
        files[Path(csv_path)] = csv_text(reports).encode()
    if plot_dir:
        from .plots import plot_reports  # matplotlib: only for plots
        files.update({Path(plot_dir) / name: png for name, png in
                      plot_reports(reports, labels).items()})
    return files
