"""The end of ``make demo``: BN and psBN finetunes of one detector, compared.

``tools/run_demo.sh`` pretrains a detector (or reuses its checkpoint, see
:func:`check_pretrained`), finetunes it twice, with BN and with psBN, and then
compares the runs (``python -m psbn_mmdet.demo compare``, :mod:`.cli`).

:func:`compare` reads each run from its mmengine work directory alone: the config
mmengine saved with the newest run, its ``vis_data/scalars.json`` (CocoMetric
results and the hooks' ``psbn/<kind>_<stage>`` scalars) and the checkpoint
named in ``last_checkpoint`` (weights, and the controller's shift counts under
the ``psbn`` key).  It prints one table — bbox mAP and mAP@50, dead pre-ReLU
channels per stage on the val images (the report's activation criterion),
channels with |γ| below the threshold, shifts, and how many shifted channels
are alive at the end — and writes into ``--out-dir``:

* ``comparison.txt`` and ``comparison.json``: the table and its numbers;
* ``dead_channels.png``: the hooks' dead channels per stage over the
  iterations, one panel per stage with a line per run;
* ``report/``: the collapse report's plots (:func:`psbn_mmdet.analysis.plots.
  plot_reports`) of the first two finetunes, named by their labels.
"""
from __future__ import annotations

import glob
import json
import os.path as osp
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..analysis import ActivationProbe, BNLayer, Report, collapse_report
from ..analysis.plots import plot_reports, png_bytes
from ..core.criteria import GAMMA_THRESHOLD
from ..core.roles import PRE_RELU, STAGES
from ..engine.hooks import CHECKPOINT_KEY, LOG_KINDS, log_key
from ..io.builders import build_model
from ..io.checkpoint import latest_checkpoint, read_checkpoint, safe_load
from ..models.layers import PSBN_TYPES
from ..utils.config import load_config
from ..utils.errors import UserError
from ..utils.files import check_writable, write_atomically
from ..utils.table import text_table

MAP_KEYS = {'bbox mAP': 'coco/bbox_mAP', 'bbox mAP@50': 'coco/bbox_mAP_50'}
DEFAULT_NUM_IMAGES = 64


# ------------------------------------------------------------------ the logs
def find_scalars(work_dir) -> Path:
    """The newest run's ``vis_data/scalars.json`` under an mmengine work dir."""
    found = sorted(glob.glob(osp.join(glob.escape(str(work_dir)), '*',
                                      'vis_data', 'scalars.json')))
    if not found:
        raise UserError(f'{work_dir}: no */vis_data/scalars.json in it '
                        '(not an mmengine work dir, or the run did not log)')
    return Path(found[-1])


def read_scalars(path) -> list[dict]:
    """The records of a ``scalars.json``: one dict per logged step."""
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise UserError(f'{path}:{number}: not a JSON record '
                                f'({error.msg})') from None
    return records


def stage_series(records: list[dict], kind: str = 'dead'
                 ) -> dict[str, list[tuple[int, float]]]:
    """``{stage: [(iteration, value), ...]}`` of what the hooks logged under
    :func:`~psbn_mmdet.engine.hooks.log_key` ``(kind, stage)``."""
    series: dict[str, list[tuple[int, float]]] = {s: [] for s in STAGES}
    for record in records:
        for stage in STAGES:
            value = record.get(log_key(kind, stage))
            if value is not None:
                series[stage].append((int(record['step']), float(value)))
    return series


def last_metrics(records: list[dict]) -> dict[str, float]:
    """The ``coco/*`` values of the last evaluation (empty if none ran)."""
    metrics: dict[str, float] = {}
    for record in records:
        found = {k: v for k, v in record.items() if k.startswith('coco/')}
        if found:
            metrics = found
    return metrics


# ------------------------------------------------------------------ the runs
def _load(path) -> dict:
    """A whole mmengine checkpoint (safe loading); a dict or UserError."""
    checkpoint = safe_load(path)
    if not isinstance(checkpoint, dict):
        raise UserError(f'{path}: not an mmengine checkpoint')
    return checkpoint


def last_checkpoint(work_dir) -> Path:
    """The checkpoint mmengine's ``last_checkpoint`` file names
    (:func:`~psbn_mmdet.io.checkpoint.latest_checkpoint`)."""
    path = latest_checkpoint(work_dir)
    if path is None:
        raise UserError(f'{work_dir}: no last_checkpoint in it')
    return Path(path)


def frozen(frozen_stages: int) -> list[str]:
    """The stages mmdet's ``ResNet(frozen_stages=n)`` freezes."""
    return list(STAGES[:max(frozen_stages + 1, 0)])


@dataclass
class Run:
    """One finished training run, read back from its work directory."""
    label: str
    work_dir: str
    config: str  # the config mmengine saved with the run
    checkpoint: str
    iterations: int
    norm: str  # the backbone's norm type
    frozen_stages: list[str]
    metrics: dict[str, float]
    series: dict[str, dict[str, list[tuple[int, float]]]]  # kind -> stage
    shift_counts: dict[str, torch.Tensor] = field(default_factory=dict)
    #: the hooks' controller state (``PostShiftController.state_dict()``)
    controller_state: dict = field(default_factory=dict)
    #: the hook's detection window, in iterations (None: no hook)
    window: int | None = None


def load_run(label: str, work_dir) -> Run:
    """Read a run: newest config and scalars, last checkpoint, shift counts."""
    scalars = find_scalars(work_dir)
    config = scalars.parent / 'config.py'
    if not config.is_file():
        raise UserError(f'{scalars.parent}: no config.py next to the scalars')
    cfg = load_config(config)
    backbone = cfg.model.backbone
    checkpoint = last_checkpoint(work_dir)
    state = _load(checkpoint)
    records = read_scalars(scalars)
    controller = state.get(CHECKPOINT_KEY) or {}
    shifts = controller.get('shift_counts', {})
    return Run(label=label, work_dir=str(work_dir), config=str(config),
               checkpoint=str(checkpoint),
               iterations=int(state.get('meta', {}).get('iter', 0)),
               norm=backbone.get('norm_cfg', {}).get('type', 'BN'),
               frozen_stages=frozen(backbone.get('frozen_stages', -1)),
               metrics=last_metrics(records),
               series={kind: stage_series(records, kind)
                       for kind in LOG_KINDS},
               shift_counts={k: torch.as_tensor(v, dtype=torch.long)
                             for k, v in shifts.items()},
               controller_state=controller,
               window=next((hook.get('window') for hook in
                            cfg.get('custom_hooks', []) if 'window' in hook),
                           None))


def check_pretrained(config, work_dir=None) -> Path:
    """The checkpoint of a finished run of ``config`` in ``work_dir``.

    Finished: ``last_checkpoint`` names a checkpoint that loads, was saved at
    the config's last iteration, and whose tensors have exactly the keys and
    shapes of the config's model.  Raises :class:`UserError` saying why not.
    """
    cfg = load_config(config)
    work_dir = work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(str(config)))[0])
    path = last_checkpoint(work_dir)
    checkpoint = _load(path)
    iteration = checkpoint.get('meta', {}).get('iter')
    wanted = cfg.train_cfg.max_iters
    if iteration != wanted:
        raise UserError(f'{path}: saved at iteration {iteration}, '
                        f'the config trains {wanted}')
    expected = {k: v.shape for k, v in build_model(cfg.model)
                .state_dict().items()}
    state = checkpoint.get('state_dict', {})
    if {k: v.shape for k, v in state.items()} != expected:
        raise UserError(f'{path}: its tensors do not match the model of '
                        f'{config}')
    return path


# ------------------------------------------------------------ the comparison
@dataclass
class Column:
    """What the table shows of one run."""
    run: Run
    report: Report  # activations measured

    def layers(self, stage: str | None = None,
               pre_relu: bool = False) -> list[BNLayer]:
        return [layer for layer in self.report.layers
                if (stage is None or layer.stage == stage)
                and (not pre_relu or layer.role == PRE_RELU)]

    def shifts(self, layer: BNLayer) -> torch.Tensor | None:
        """Per-channel shift counts of a report layer (None: never shifted)."""
        name = layer.name
        return self.run.shift_counts.get(
            name, self.run.shift_counts.get(name.removeprefix('backbone.')))


def measure(runs: list[Run], num_images: int | None = DEFAULT_NUM_IMAGES,
            gamma_threshold: float = GAMMA_THRESHOLD) -> list[Column]:
    """The collapse report of each run's checkpoint on ``num_images`` val
    images of its own config (test pipeline, data preprocessor)."""
    columns = []
    for run in runs:
        probe = ActivationProbe(run.config, run.config, num_images)
        report = collapse_report(read_checkpoint(run.checkpoint, mmap=True),
                                 gamma_threshold, probe=probe)
        columns.append(Column(run, report))
    return columns


def _count(layers, attribute: str) -> int:
    return sum(int(getattr(layer, attribute).sum()) for layer in layers)


def _is_psbn(norm: str) -> bool:
    return norm in {cls.__name__ for cls in PSBN_TYPES}


def summary(columns: list[Column]) -> dict:
    """The numbers of the table, as JSON-ready dicts per run label."""
    result = {}
    for column in columns:
        run, stages, matched = column.run, {}, 0
        for stage in STAGES:
            pre_relu = column.layers(stage, pre_relu=True)
            row = dict(
                pre_relu_channels=sum(layer.channels for layer in pre_relu),
                dead=_count(pre_relu, 'dead'),
                bn_channels=sum(layer.channels
                                for layer in column.layers(stage)),
                collapsed_gamma=_count(column.layers(stage), 'collapsed'),
                frozen=stage in run.frozen_stages,
                shifts=0, shifted_channels=0, shifted_alive=0)
            for layer in pre_relu:
                counts = column.shifts(layer)
                if counts is None:
                    continue
                matched += 1
                shifted = counts > 0
                row['shifts'] += int(counts.sum())
                row['shifted_channels'] += int(shifted.sum())
                row['shifted_alive'] += int((shifted & ~layer.dead).sum())
            stages[stage] = row
        if run.shift_counts and matched < len(run.shift_counts):
            unknown = sorted(set(run.shift_counts) - {
                layer.name for layer in column.layers()})
            raise UserError(f'{run.checkpoint}: shift counts of layers the '
                            f'backbone does not have ({unknown[0]}, ...)')
        result[run.label] = dict(
            work_dir=run.work_dir, checkpoint=run.checkpoint,
            iterations=run.iterations, norm=run.norm,
            frozen_stages=run.frozen_stages,
            bbox_mAP=run.metrics.get(MAP_KEYS['bbox mAP']),
            bbox_mAP_50=run.metrics.get(MAP_KEYS['bbox mAP@50']),
            num_images=column.report.num_images,
            gamma_threshold=column.report.gamma_threshold,
            activation_threshold=column.report.activation_threshold,
            stages=stages,
            last_window_dead={stage: points[-1][1] if points else None
                              for stage, points in run.series['dead'].items()})
    return result


def _dead(run: dict, rows: list[dict]) -> str:
    return str(sum(row['dead'] for row in rows))


def _collapsed(run: dict, rows: list[dict]) -> str:
    return str(sum(row['collapsed_gamma'] for row in rows))


def _shifts(run: dict, rows: list[dict]) -> str:
    if not _is_psbn(run['norm']):
        return '-'
    return (f'{sum(row["shifts"] for row in rows)} '
            f'({sum(row["shifted_alive"] for row in rows)}/'
            f'{sum(row["shifted_channels"] for row in rows)})')


def format_comparison(numbers: dict) -> str:
    """The comparison table (plain text) of :func:`summary`'s numbers."""
    labels = list(numbers)
    first = numbers[labels[0]]['stages']
    frozen_in = [label for label in labels
                 if numbers[label]['frozen_stages']]
    frozen = {s for label in frozen_in
              for s in numbers[label]['frozen_stages']}
    images = numbers[labels[0]]['num_images']
    gamma = numbers[labels[0]]['gamma_threshold']

    def section(title: str, of: str, cell) -> list[list[str] | str]:
        rows: list[list[str] | str] = [title]
        for stage in [*STAGES, 'total']:
            picked = STAGES if stage == 'total' else [stage]
            rows.append([
                f'  {stage}{" *" if stage in frozen else ""}',
                str(sum(first[s][of] for s in picked)),
                *(cell(numbers[label], [numbers[label]['stages'][s]
                                        for s in picked])
                  for label in labels)])
        return rows

    def metric(value) -> str:
        return '-' if value is None else f'{value:.3f}'

    rows = [['', 'of', *labels],
            ['iterations', '',
             *(str(numbers[label]['iterations']) for label in labels)],
            ['bbox mAP', '',
             *(metric(numbers[label]['bbox_mAP']) for label in labels)],
            ['bbox mAP@50', '',
             *(metric(numbers[label]['bbox_mAP_50']) for label in labels)]]
    rows += section(f'dead pre-ReLU channels: never active on {images} val '
                    'images', 'pre_relu_channels', _dead)
    rows += section(f'channels with |γ| < {gamma:g}, every BN',
                    'bn_channels', _collapsed)
    rows += section('revivals (revived channels alive at the end / '
                    'channels revived)', 'pre_relu_channels', _shifts)
    notes = ['of: the stage\'s pre-ReLU channels (every BN channel for |γ|);'
             ' -: not a psBN run']
    if frozen:
        notes.append(f'* frozen in {", ".join(frozen_in)}: not trained, not '
                     'monitored, never shifted')
    return text_table(rows) + '\n' + '\n'.join(notes) + '\n'


# --------------------------------------------------------------------- plots
def dead_channels_figure(runs: list[Run]):
    """The hooks' dead channels per stage over iterations, a line per run.

    A panel without a line says why in words (the stage was frozen in every
    run, or no run logged it); one whose lines stay at 0 says so too.
    """
    from matplotlib.figure import Figure
    figure = Figure(figsize=(3.2 * len(STAGES), 3.2))
    axes = figure.subplots(1, len(STAGES))
    for ax, stage in zip(axes, STAGES):
        shown = [run for run in runs if run.series['dead'][stage]
                 and stage not in run.frozen_stages]
        for run in shown:
            steps, values = zip(*run.series['dead'][stage])
            ax.plot(steps, values, label=run.label, marker='.', ms=3)
        ax.set(title=stage, xlabel='iteration')
        if not shown:
            reason = ('frozen in every run:\nnot trained, not monitored'
                      if all(stage in run.frozen_stages for run in runs) else
                      'no run logged this stage')
            ax.text(0.5, 0.5, reason, ha='center', va='center',
                    transform=ax.transAxes, color='grey')
            ax.set(xticks=[], yticks=[])
            continue
        ax.set_ylim(bottom=0)
        if not any(value for run in shown
                   for _, value in run.series['dead'][stage]):
            ax.text(0.5, 0.5, 'no dead channel in any run', ha='center',
                    va='center', transform=ax.transAxes, color='grey')
        ax.legend(fontsize='small')
    axes[0].set_ylabel('dead pre-ReLU channels\n(last detection window)')
    return figure


# ------------------------------------------------------------ the evidence
def read_evidence(path) -> dict:
    """A committed benchmark's paired differences for the demo's setting
    (written by the research benchmark): ``setting``, ``source`` (the page
    and records), ``metric``, ``seeds`` and ``differences``, a list of
    ``{name, mean, low, high}`` (mean and 95% t interval over paired seeds).

    Raises:
        UserError: the file is missing or not such a summary.
    """
    try:
        with open(path) as f:
            evidence = json.load(f)
        for difference in evidence['differences']:
            float(difference['mean']), float(difference['low'])
            float(difference['high']), str(difference['name'])
        str(evidence['setting']), int(evidence['seeds'])
    except OSError as error:
        raise UserError(f'{path}: {error.strerror}') from None
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f'{path}: not a benchmark summary '
                        f'({type(error).__name__}: {error})') from None
    return evidence


def format_evidence(evidence: dict) -> str:
    """The lines under the demo's table that put its one seed in
    context."""
    metric = evidence.get('metric', 'bbox mAP')
    lines = [f'The committed benchmark of {evidence["setting"]} '
             f'({evidence["seeds"]} paired seeds; {evidence["source"]}), '
             f'{metric}, mean and 95% t interval over the seeds:']
    lines += [f'  {d["name"]}: {d["mean"]:+.3f} [{d["low"]:+.3f}, '
              f'{d["high"]:+.3f}]' for d in evidence['differences']]
    lines.append(evidence.get('note') or 'One demo run is one seed: read its '
                 'difference against these intervals.')
    return '\n'.join(lines) + '\n'


@dataclass
class Comparison:
    """What :func:`compare` measured, printed and wrote."""
    numbers: dict  # :func:`summary`
    text: str  # :func:`format_comparison`
    files: list[str]  # written into the out dir


def compare(runs: list[Run], out_dir, pretrained: Run | None = None,
            num_images: int | None = DEFAULT_NUM_IMAGES,
            evidence: list[dict] = ()) -> Comparison:
    """Measure the runs, render the table (and under it the committed
    benchmarks' ``evidence``, :func:`read_evidence`: the first of the runs'
    setting, any others with a ``note`` saying how they relate), write the
    files into ``out_dir`` (all or none)."""
    check_writable(out_dir, is_dir=True)
    columns = measure(([pretrained] if pretrained else []) + runs,
                      num_images)
    numbers = summary(columns)
    text = format_comparison(numbers)
    if evidence:
        numbers['benchmark'], *others = evidence
        if others:
            numbers['other_benchmarks'] = others
        text += ''.join('\n' + format_evidence(e) for e in evidence)
    finetuned = columns[1:] if pretrained else columns
    files = {'comparison.txt': text.encode(),
             'comparison.json': (json.dumps(numbers, indent=2) + '\n').encode(),
             'dead_channels.png': png_bytes(dead_channels_figure(runs))}
    shown = finetuned[:2]
    files.update({f'report/{name}': png for name, png in plot_reports(
        [column.report for column in shown],
        [column.run.label for column in shown]).items()})
    write_atomically({Path(out_dir) / name: content
                      for name, content in files.items()})
    return Comparison(numbers, text, list(files))
