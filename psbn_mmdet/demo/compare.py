"""The end of ``make demo``: BN and psBN finetunes of one detector, compared.

``tools/run_demo.sh`` pretrains a detector (or reuses its checkpoint), finetunes
it twice, with BN and with psBN, and then runs::

    python -m psbn_mmdet.demo check-pretrained CONFIG [--work-dir DIR]
    python -m psbn_mmdet.demo compare BN=WORK_DIR psBN=WORK_DIR \\
        [--pretrained WORK_DIR] [--num-images N] --out-dir DIR

``check-pretrained`` prints the path of a finished training run's checkpoint
(exit 0), or says on stderr why there is none to reuse (exit 1).

``compare`` reads each run from its mmengine work directory alone: the config
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
* ``report/``: the collapse report's plots (:func:`psbn_mmdet.plots.
  plot_reports`) of the first two runs, a and b.
"""
from __future__ import annotations

import argparse
import glob
import io
import json
import os.path as osp
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..io.checkpoint import safe_load
from ..core.criteria import GAMMA_THRESHOLD
from ..utils.config import load_config
from ..utils.errors import UserError
from ..utils.files import check_writable, write_atomically
from ..analysis.report import ActivationProbe, BNLayer, Report, collapse_report
from ..analysis.report import load_checkpoint as load_report_checkpoint
from ..core.roles import PRE_RELU, STAGES

KINDS = ('dead', 'collapsed_gamma', 'recovered')
MAP_KEYS = {'bbox mAP': 'coco/bbox_mAP', 'bbox mAP@50': 'coco/bbox_mAP_50'}
DEFAULT_NUM_IMAGES = 64


class DemoError(UserError):
    """Bad input; the message is one line for the user."""


# ------------------------------------------------------------------ the logs
def find_scalars(work_dir) -> Path:
    """The newest run's ``vis_data/scalars.json`` under an mmengine work dir."""
    found = sorted(glob.glob(osp.join(glob.escape(str(work_dir)), '*',
                                      'vis_data', 'scalars.json')))
    if not found:
        raise DemoError(f'{work_dir}: no */vis_data/scalars.json in it '
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
                raise DemoError(f'{path}:{number}: not a JSON record '
                                f'({error.msg})') from None
    return records


def stage_series(records: list[dict], kind: str = 'dead'
                 ) -> dict[str, list[tuple[int, float]]]:
    """``{stage: [(iteration, value), ...]}`` of the hooks' ``psbn/<kind>_*``."""
    series: dict[str, list[tuple[int, float]]] = {s: [] for s in STAGES}
    for record in records:
        for stage in STAGES:
            value = record.get(f'psbn/{kind}_{stage}')
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
    """A whole mmengine checkpoint (safe loading); a dict or DemoError."""
    checkpoint = safe_load(path)
    if not isinstance(checkpoint, dict):
        raise DemoError(f'{path}: not an mmengine checkpoint')
    return checkpoint


def last_checkpoint(work_dir) -> Path:
    """The checkpoint mmengine's ``last_checkpoint`` file names.

    mmengine writes the path as the run saw it; a work dir moved or opened
    from another directory since is looked into for the same file name.
    """
    pointer = Path(work_dir) / 'last_checkpoint'
    if not pointer.is_file():
        raise DemoError(f'{work_dir}: no last_checkpoint in it')
    named = Path(pointer.read_text().strip())
    for path in (named, Path(work_dir) / named.name):
        if path.is_file():
            return path
    raise DemoError(f'{pointer} names {named}, which does not exist')


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
        raise DemoError(f'{scalars.parent}: no config.py next to the scalars')
    cfg = load_config(config)
    backbone = cfg.model.backbone
    checkpoint = last_checkpoint(work_dir)
    state = _load(checkpoint)
    records = read_scalars(scalars)
    controller = state.get('psbn') or {}
    shifts = controller.get('shift_counts', {})
    return Run(label=label, work_dir=str(work_dir), config=str(config),
               checkpoint=str(checkpoint),
               iterations=int(state.get('meta', {}).get('iter', 0)),
               norm=backbone.get('norm_cfg', {}).get('type', 'BN'),
               frozen_stages=frozen(backbone.get('frozen_stages', -1)),
               metrics=last_metrics(records),
               series={kind: stage_series(records, kind) for kind in KINDS},
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
    shapes of the config's model.  Raises :class:`DemoError` saying why not.
    """
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    cfg = load_config(config)
    work_dir = work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(str(config)))[0])
    path = last_checkpoint(work_dir)
    checkpoint = _load(path)
    iteration = checkpoint.get('meta', {}).get('iter')
    wanted = cfg.train_cfg.max_iters
    if iteration != wanted:
        raise DemoError(f'{path}: saved at iteration {iteration}, '
                        f'the config trains {wanted}')
    register_all_modules()
    expected = {k: v.shape for k, v in MODELS.build(cfg.model)
                .state_dict().items()}
    state = checkpoint.get('state_dict', {})
    if {k: v.shape for k, v in state.items()} != expected:
        raise DemoError(f'{path}: its tensors do not match the model of '
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
        print(f'measuring dead channels of {run.label} ({run.checkpoint})',
              file=sys.stderr)
        probe = ActivationProbe(run.config, run.config, num_images)
        report = collapse_report(load_report_checkpoint(run.checkpoint),
                                 gamma_threshold, probe=probe)
        columns.append(Column(run, report))
    return columns


def _count(layers, attribute: str) -> int:
    return sum(int(getattr(layer, attribute).sum()) for layer in layers)


def _is_psbn(norm: str) -> bool:
    return norm in ('psBN', 'psSyncBN')


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
            raise DemoError(f'{run.checkpoint}: shift counts of layers the '
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


def _table(rows: list[list[str] | str]) -> str:
    """Columns aligned (the first to the left); a str row is a heading,
    printed as it is and left out of the widths."""
    cells = [row for row in rows if not isinstance(row, str)]
    widths = [max(len(row[i]) for row in cells)
              for i in range(len(cells[0]))]
    return '\n'.join(
        row if isinstance(row, str) else '  '.join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
        for row in rows)


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
    rows += section('post-shifts (shifted channels alive at the end / '
                    'channels shifted)', 'pre_relu_channels', _shifts)
    notes = ['of: the stage\'s pre-ReLU channels (every BN channel for |γ|);'
             ' -: not a psBN run']
    if frozen:
        notes.append(f'* frozen in {", ".join(frozen_in)}: not trained, not '
                     'monitored, never shifted')
    return _table(rows) + '\n' + '\n'.join(notes) + '\n'


# --------------------------------------------------------------------- plots
def _png(figure) -> bytes:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format='png', dpi=100)
    return buffer.getvalue()


def dead_channels_figure(runs: list[Run]):
    """The hooks' dead channels per stage over iterations, a line per run.

    A panel without a line says why in words (the stage was frozen in every
    run, or no run logged it); one whose lines stay at 0 says so too.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(3.2 * len(STAGES), 3.2))
    FigureCanvasAgg(figure)
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


def compare(runs: list[Run], out_dir, pretrained: Run | None = None,
            num_images: int | None = DEFAULT_NUM_IMAGES, out=None) -> dict:
    """Measure, print the table, write the files; returns the numbers."""
    from ..analysis.plots import plot_reports
    out = out or sys.stdout
    check_writable(out_dir, is_dir=True)
    columns = measure(([pretrained] if pretrained else []) + runs,
                      num_images)
    numbers = summary(columns)
    text = format_comparison(numbers)
    finetuned = columns[1:] if pretrained else columns
    files = {'comparison.txt': text.encode(),
             'comparison.json': (json.dumps(numbers, indent=2) + '\n').encode(),
             'dead_channels.png': _png(dead_channels_figure(runs))}
    reports = [column.report for column in finetuned[:2]]
    files.update({f'report/{name}': png
                  for name, png in plot_reports(*reports).items()})
    out.write(text)
    write_atomically({Path(out_dir) / name: content
                      for name, content in files.items()})
    print(f'wrote {out_dir}/: {", ".join(files)}', file=out)
    return numbers


# ----------------------------------------------------------------------- CLI
def _labelled(text: str) -> tuple[str, str]:
    label, sep, work_dir = text.partition('=')
    if not sep or not label or not work_dir:
        raise argparse.ArgumentTypeError(f'expected LABEL=WORK_DIR, got '
                                          f'{text!r}')
    return label, work_dir


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog='python -m psbn_mmdet.demo',
        description='The end of `make demo`: reuse a pretrained checkpoint, '
        'compare BN and psBN finetunes.')
    commands = main.add_subparsers(dest='command', required=True)
    check = commands.add_parser(
        'check-pretrained', help='print the checkpoint of a finished run of '
        'CONFIG (exit 0), or why there is none (exit 1)')
    check.add_argument('config')
    check.add_argument('--work-dir', help='default: work_dirs/<config name>')
    comp = commands.add_parser(
        'compare', help='the comparison table and plots of finished runs')
    comp.add_argument('runs', nargs='+', type=_labelled,
                      metavar='LABEL=WORK_DIR')
    comp.add_argument('--pretrained', metavar='WORK_DIR',
                      help='the run the others started from (a column too)')
    comp.add_argument('--num-images', type=int, default=DEFAULT_NUM_IMAGES,
                      help='val images for the dead-channel criterion '
                      '(default: %(default)s)')
    comp.add_argument('--out-dir', required=True)
    return main


def main(argv=None) -> int:
    """Bad input raises :class:`UserError` (:func:`psbn_mmdet.cli.run_tool`
    prints it as one line, exit 2); no checkpoint to reuse is exit 1."""
    args = parser().parse_args(argv)
    if args.command == 'check-pretrained':
        try:
            print(check_pretrained(args.config, args.work_dir))
        except UserError as error:
            print(f'no pretrained checkpoint to reuse: {error}',
                  file=sys.stderr)
            return 1
        return 0
    if args.num_images < 1:
        raise DemoError(f'--num-images must be at least 1 '
                        f'(got {args.num_images})')
    runs = [load_run(label, work_dir) for label, work_dir in args.runs]
    pretrained = (load_run('pretrained', args.pretrained)
                  if args.pretrained else None)
    compare(runs, args.out_dir, pretrained, args.num_images)
    return 0

