"""The detection study's demo cells: BN vs psBN on the demo detector.

    python -m research.detection_study demo [--quick] [--seeds 0 1 2]
        [--regimes sgd sgd_high adam_l2] [--iterations 100] [--processes 2]
        [--starts pretrained collapsed healthy] [--json RUNS.json]
        [--out docs/demo_finetune.md] [--figures docs/figures]
        [--from-json RUNS.json ... [--evidence OUT.json]]

The demo's narrow ResNet-18 Faster R-CNN, pretrained with BN on the demo data
(``make demo``'s checkpoint, pretrained here when missing), is finetuned with
mmdet's finetuning setup (stem and layer1 frozen, ``norm_eval=True``) in each
optimizer regime (:data:`REGIMES`), with BN (collapse monitor) and with psBN
(post-shift hook), each pair sharing its seed: the two runs are bit-identical
until psBN's first shift.  Every run is a ``tools/train.py`` process (mmdet's
real path), read back with :mod:`psbn_mmdet.demo.compare`: CocoMetric's bbox mAP,
dead pre-ReLU channels per stage on the val images at the end (the report's
activation criterion) and over training (the hooks' scalars), shifts,
re-shifts of already shifted channels and the shifted channels alive at the
end.  ``--quick``: one short cell (Adam + L2, seed 0) for the test.

``--starts collapsed healthy`` (issue 29): the finetunes start instead from
a checkpoint that arrives with dead channels (the pretrained one after 100
BN iterations under Adam + coupled L2, :data:`STARTS`) or from its healthy
control (100 iterations under SGD); ``--regimes sgd`` then is the demo's
``configs/demo/faster_rcnn_r18_demo_{bn,psbn}_inherited.py``.  Paired
differences over seeds go under the table; ``--evidence`` writes those of
one cell for ``make demo``.

Records (one per run) go to ``--json``; the table and the figure are rendered
from records only (``--from-json`` re-renders without training), into the
``finetune`` section of ``--out``.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from psbn_mmdet.core import STAGES
from psbn_mmdet.demo.data import make_demo_data
from psbn_mmdet.utils import UserError

from ..benchmark import machine
from ..markdown import write_generated
from ..processes import train_process
from ..records import read_records
from ..stats import interval, t_interval
from ..stats import paired as differences
from .harness import (NUM_IMAGES, Regime, add_run_arguments,
                      check_run_arguments, dead_pct, iteration_options,
                      mean_sd, optimizer_options, rank, read_run, run_jobs,
                      trained_checkpoint, trained_stages, write_record)

PROG = 'detection_study demo'
PRETRAIN = 'configs/demo/faster_rcnn_r18_demo_bn_pretrain.py'
# the demo's psBN finetune, plus the re-shift counter (research/reshifts.py)
PSBN_FINETUNE = 'research/configs/faster_rcnn_r18_demo_psbn_finetune_reshifts.py'
#: norm label -> (config, --cfg-options over it): BN, psBN with its defaults,
#: the rules compared for issue 13 and the peer, ReDo on BN (research/redo.py)
FINETUNE = {
    'BN': ('configs/demo/faster_rcnn_r18_demo_bn_finetune.py', ()),
    # the defaults: window 10 (the demo hooks'), active_fraction 0.5
    'psBN': (PSBN_FINETUNE, ()),
    'psBN window=20': (PSBN_FINETUNE, ('custom_hooks.0.window=20', )),
    # the collapse study's first best combination
    'psBN window=20 ρ=0.16': (PSBN_FINETUNE, (
        'custom_hooks.0.window=20',
        'model.backbone.norm_cfg.active_fraction=0.16')),
    # the layer's ρ before issue 13
    'psBN window=20 ρ=0.01': (PSBN_FINETUNE, (
        'custom_hooks.0.window=20',
        'model.backbone.norm_cfg.active_fraction=0.01')),
    'ReDo': ('research/configs/faster_rcnn_r18_demo_redo_finetune.py', ()),
    # psBN's revival rules by name (issue 29): 'psBN' is the default
    'psBN revival=shift': (PSBN_FINETUNE, (
        'model.backbone.norm_cfg.revival=shift', )),
    'psBN revival=reinit_init': (PSBN_FINETUNE, (
        'model.backbone.norm_cfg.revival=reinit_init', )),
    'psBN revival=reinit': (PSBN_FINETUNE, (
        'model.backbone.norm_cfg.revival=reinit', )),
    'psBN revival=auto': (PSBN_FINETUNE, (
        'model.backbone.norm_cfg.revival=auto', )),
}
#: the Mask R-CNN cell (--detector mask): the demo's Mask R-CNN, pretrained from
#: random init, finetuned the same way
MASK_PRETRAIN = 'configs/demo/mask_rcnn_r18_demo_bn.py'
MASK_FINETUNE = {'BN': 'configs/demo/mask_rcnn_r18_demo_bn_finetune.py',
                 'psBN': 'configs/demo/mask_rcnn_r18_demo_psbn_finetune.py'}
#: the norms a grid runs unless --norms says otherwise
DEFAULT_NORMS = ('BN', 'psBN')


def _sgd(lr: float) -> tuple[str, ...]:
    return optimizer_options('SGD', replace=False, lr=lr, momentum=0.9,
                             weight_decay=0.0001)


REGIMES = {
    'sgd': Regime('SGD+m, lr 0.02 (control)', _sgd(0.02)),
    'sgd_high': Regime('SGD+m, lr 0.06 (high)', _sgd(0.06)),
    # the finetune configs' own optimizer: Adam, lr 2e-3, coupled L2 5e-3
    'adam_l2': Regime('Adam + coupled L2 (the demo)', ()),
}


@dataclass(frozen=True)
class Start:
    """A checkpoint the finetunes start from, made from the pretrained one
    by one more BN finetune (seed 0) in a regime: the inherited-collapse
    cells (issue 29) start from a checkpoint that arrives with dead
    channels, their control from one that does not."""
    label: str
    regime: str  # of REGIMES, run over FINETUNE['BN'] from the pretrained


#: where a finetune starts: the pretrained checkpoint itself (''), or a
#: checkpoint made from it (:class:`Start`)
STARTS = {
    # BN finetuned 100 iterations under Adam + coupled L2 (the demo's
    # finetune config): the checkpoint arrives with about 40% of the trained
    # stages' channels dead
    'collapsed': Start('collapsed checkpoint', 'adam_l2'),
    # the same 100 iterations under SGD: no collapse (the healthy control)
    'healthy': Start('healthy checkpoint', 'sgd'),
}


@dataclass(frozen=True)
class Job:
    regime: str
    norm: str  # a FINETUNE label
    seed: int
    iterations: int | None = None  # None: the config's
    detector: str = 'faster'  # or 'mask' (MASK_FINETUNE)
    start: str = ''  # a STARTS key; '': the pretrained checkpoint

    @property
    def name(self) -> str:
        norm = re.sub(r'[^a-z0-9]+', '_', self.norm.lower()).strip('_')
        prefix = '' if self.detector == 'faster' else f'{self.detector}_'
        prefix += f'{self.start}_' if self.start else ''
        return f'{prefix}{self.regime}_{norm}_seed{self.seed}'


def grid(regimes, seeds, iterations=None, norms=DEFAULT_NORMS,
         detector: str = 'faster', start: str = '') -> list[Job]:
    return [Job(regime, norm, seed, iterations, detector, start)
            for regime in regimes for seed in seeds for norm in norms]


# ------------------------------------------------------------------ running
def pretrained(work_dirs: Path, iterations: int | None = None,
               config: str = PRETRAIN) -> str:
    """The pretrained checkpoint: reused when finished, else trained."""
    name = Path(config).stem + (f'_{iterations}' if iterations else '')
    work_dir = work_dirs / name
    return trained_checkpoint(
        config, work_dir, iteration_options(iterations), torch_threads(),
        check_config=iterations is None,
        message=f'pretraining {config} into {work_dir}')


def torch_threads() -> int:
    return os.cpu_count() or 1


def start_checkpoint(start: str, pretrained_checkpoint: str,
                     work_dirs: Path) -> str:
    """The checkpoint of ``STARTS[start]``: reused when finished, else made
    from ``pretrained_checkpoint`` (one BN finetune, seed 0, 2 threads)."""
    job = Job(STARTS[start].regime, 'BN', 0, start=f'make_{start}')
    config, options = finetune_options(job, pretrained_checkpoint)
    return trained_checkpoint(
        config, work_dirs / job.name, options, torch_threads(),
        check_config=False,
        message=f'making the {STARTS[start].label} ({job.name})')


def finetune_options(job: Job, checkpoint: str) -> tuple[str, list[str]]:
    """A job's finetune config and its ``--cfg-options``."""
    config, norm_options = FINETUNE[job.norm]
    if job.detector == 'mask':
        config = MASK_FINETUNE[job.norm]
    return config, [f'load_from={checkpoint}', f'randomness.seed={job.seed}',
                    *norm_options, *REGIMES[job.regime].options,
                    *iteration_options(job.iterations)]


def measure(job: Job, work_dirs: Path, seconds: float) -> dict:
    """The record of a finished job (read back from its work dir)."""
    run = read_run(job.name, work_dirs / job.name)
    state, redo = run['reshifts'], run['redo']
    return dict(
        job=asdict(job), seconds=seconds, checkpoint=run['checkpoint'],
        bbox_mAP=run['bbox_mAP'], bbox_mAP_50=run['bbox_mAP_50'],
        segm_mAP=run['metrics'].get('coco/segm_mAP'),
        stages=run['stages'], dead_series=run['dead_series'],
        recollapses=state.get('recollapses', 0),
        recollapses_next_window=state.get(
            'recollapses_next_window', redo.get('again_next_period')),
        steps_to_recollapse_sum=state.get('steps_to_recollapse_sum', 0),
        recycled=run['recycled'])


def run_all(jobs: list[Job], checkpoints: dict[str, str], work_dirs: Path,
            processes: int, saved=None) -> list[dict]:
    """Train the jobs ``processes`` at a time (torch threads split between
    them), each from ``checkpoints[job.start]``, measuring each as it
    finishes; records in job order."""
    threads = max(1, torch_threads() // processes)

    def train(job: Job) -> float:
        config, options = finetune_options(job, checkpoints[job.start])
        return train_process(config, work_dirs / job.name, options, threads)

    return run_jobs(jobs, train, lambda job, seconds: measure(
        job, work_dirs, seconds), processes, saved)


# ---------------------------------------------------------------- rendering
def cells(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    grouped: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        job = record['job']
        key = (job.get('detector', 'faster'),
               _start_regime(job), job['norm'])
        grouped.setdefault(key, []).append(record)
    order = [*REGIMES, *(f'{start}:{regime}' for start in STARTS
                         for regime in REGIMES)]
    return dict(sorted(grouped.items(), key=lambda item: (
        item[0][0] != 'faster',
        rank(order, item[0][1]), rank(FINETUNE, item[0][2]))))


def _start_regime(job: dict) -> str:
    """``regime``, or ``start:regime`` for a job from a STARTS checkpoint."""
    start = job.get('start', '')
    return f'{start}:{job["regime"]}' if start else job['regime']


DETECTOR_LABELS = {'faster': '', 'mask': 'Mask R-CNN: '}


def _label(detector: str, regime: str) -> str:
    start, _, regime = regime.rpartition(':')
    label = REGIMES[regime].label if regime in REGIMES else regime
    if start:  # the regime is a control only from the pretrained checkpoint
        label = (f'{STARTS[start].label if start in STARTS else start}, '
                 + label.replace(' (control)', ''))
    return DETECTOR_LABELS.get(detector, f'{detector}: ') + label


#: the inherited-collapse cell's paired differences (issue 29): each rule
#: against BN and against ReDo from the collapsed checkpoint, and the
#: healthy checkpoint's BN finetune against it (what collapse costs)
PAIRS = (('psBN', 'BN'), ('psBN', 'ReDo'), ('psBN revival=shift', 'BN'),
         ('psBN revival=shift', 'ReDo'), ('psBN revival=reinit', 'BN'),
         ('psBN revival=reinit', 'ReDo'), ('ReDo', 'BN'))


def by_seed(runs: list[dict]) -> dict[tuple[str, str], dict[str, dict]]:
    """``(detector, regime) -> norm -> seed -> run``, where the healthy
    checkpoint's runs of a ``collapsed:`` regime count as its norm
    'healthy checkpoint, BN' (paired by seed with the collapsed runs)."""
    out: dict = {}
    for run in runs:
        job = run['job']
        regime, norm = _start_regime(job), job['norm']
        if job.get('start') == 'healthy':
            regime = f'collapsed:{job["regime"]}'
            norm = f'healthy checkpoint, {norm}'
        out.setdefault((job.get('detector', 'faster'), regime), {}).setdefault(
            norm, {})[job['seed']] = run
    return out


def _pairs(norms: dict):
    healthy = [n for n in norms if n.startswith('healthy checkpoint')]
    control = 'healthy checkpoint, BN'
    return [*((control, 'BN') for _ in healthy[:1] if control in norms),
            *((h, control) for h in healthy if h != control), *PAIRS]


def paired_table(runs: list[dict]) -> str:
    """Paired differences (95% t intervals) in every cell with pairs."""
    lines = ['| cell | difference | pairs | bbox mAP, mean [95% t interval] '
             '| dead % trained stages (points) |', '|' + '---|' * 5]
    for (detector, regime), norms in by_seed(runs).items():
        for a, b in _pairs(norms):
            mAP = differences(norms, a, b, lambda r: r['bbox_mAP'])
            if len(mAP) < 2:
                continue
            dead = differences(norms, a, b, dead_pct)
            lines.append(f'| {_label(detector, regime)} | {a} − {b} | '
                         f'{len(mAP)} | {interval(mAP)} | '
                         f'{interval(dead, 1)} |')
    return '\n'.join(lines) if len(lines) > 2 else ''


def evidence(runs: list[dict], regime: str, source: str) -> dict:
    """The summary ``python -m psbn_mmdet.demo compare --evidence`` prints
    under the demo's one-seed table (``psbn_mmdet.demo.compare.read_evidence``
    reads it): each pair's mean and 95% t interval in the faster detector's
    ``regime`` (e.g. ``collapsed:sgd``)."""
    norms = by_seed(runs).get(('faster', regime), {})
    rows, seeds = [], set()
    for a, b in _pairs(norms):
        diffs = differences(norms, a, b, lambda r: r['bbox_mAP'])
        if len(diffs) < 2:
            continue
        mean, low, high = t_interval(diffs)
        rows.append(dict(name=f'{a} − {b}', mean=mean, low=low, high=high))
        seeds.add(len(diffs))
    if not rows:
        raise UserError(f'no paired seeds of regime {regime!r} in the '
                        'records')
    return dict(setting=f'the demo detector, {_label("faster", regime)} '
                f'({NUM_IMAGES} val images)', source=source,
                metric='bbox mAP', seeds=min(seeds), differences=rows)


def table(records: list[dict]) -> str:
    trained = trained_stages(records)
    segm = any(r.get('segm_mAP') is not None for r in records)
    header = ['regime', 'norm', 'seeds', 'bbox mAP', 'mAP@50',
              *(['segm mAP'] if segm else []),
              *[f'dead % {s}' for s in trained], 'dead % (trained stages)',
              'shifts', 're-shifts (one window later)',
              'shifted alive at end', 'min / run']
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '---|' * len(header)]
    for (detector, regime, norm), runs in cells(records).items():
        psbn = norm.startswith('psBN')
        shifted = sum(sum(r['stages'][s]['shifted_channels'] for s in STAGES)
                      for r in runs)
        alive = sum(sum(r['stages'][s]['shifted_alive'] for s in STAGES)
                    for r in runs)
        next_window = [r.get('recollapses_next_window') for r in runs]
        reshifts = mean_sd([r['recollapses'] for r in runs], 0) + (
            f' ({mean_sd(next_window, 0)})'
            if None not in next_window else '')
        cells_ = [
            _label(detector, regime), norm, str(len(runs)),
            mean_sd([r['bbox_mAP'] for r in runs], 3),
            mean_sd([r['bbox_mAP_50'] for r in runs], 3),
            *([mean_sd([r.get('segm_mAP') for r in runs], 3)]
              if segm else []),
            *[mean_sd([dead_pct(r, [s]) for r in runs], 1) for s in trained],
            mean_sd([dead_pct(r, trained) for r in runs], 1),
            mean_sd([sum(r['stages'][s]['shifts'] for s in STAGES)
                       for r in runs], 0) if psbn else (
                mean_sd([r['recycled'] for r in runs], 0) + ' recycled'
                if runs[0].get('recycled') is not None else '–'),
            reshifts if psbn else '–',
            (f'{alive}/{shifted} ({100 * alive / shifted:.0f}%)'
             if psbn and shifted else '–'),
            f'{statistics.fmean(r["seconds"] for r in runs) / 60:.1f}']
        lines.append('| ' + ' | '.join(cells_) + ' |')
    return '\n'.join(lines)


def figure(records: list[dict]) -> bytes:
    """Dead pre-ReLU channels of the trained stages over iterations (the
    hooks' last-window counts), mean over seeds: a panel per regime."""
    import io

    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    grouped = cells(records)
    regimes = list(dict.fromkeys(key[:2] for key in grouped))
    fig = Figure(figsize=(4.2 * len(regimes), 3.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(regimes), squeeze=False)[0]
    for ax, regime in zip(axes, regimes):
        for norm in FINETUNE:
            runs = grouped.get((*regime, norm), [])
            series = []
            for r in runs:
                points = {}
                for stage, values in r['dead_series'].items():
                    if r['stages'][stage]['frozen']:
                        continue
                    for step, value in values:
                        points[step] = points.get(step, 0) + value
                series.append(sorted(points.items()))
            if not series or not series[0]:
                continue
            steps = [s for s, _ in series[0]]
            values = np.array([[v for _, v in s] for s in series
                               if len(s) == len(steps)])
            ax.plot(steps, values.mean(0), marker='.', label=norm)
        ax.set(title=_label(*regime),
               xlabel='iteration', ylabel='dead pre-ReLU channels')
        ax.set_ylim(bottom=0)
        if not ax.lines:
            ax.text(0.5, 0.5, 'no logged dead counts', ha='center',
                    transform=ax.transAxes, color='grey')
        elif not any(line.get_ydata().any() for line in ax.lines):
            ax.text(0.5, 0.5, 'no dead channel in any run', ha='center',
                    transform=ax.transAxes, color='grey')
        ax.legend(fontsize='small')
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=90)
    return buffer.getvalue()


def _provenance(record: dict) -> str:
    runs = record['runs']
    detector = runs[0]['job'].get('detector', 'faster')
    pretrain = PRETRAIN if detector == 'faster' else MASK_PRETRAIN
    return (
        f'`python -m research.detection_study demo '
        f'{shlex.join(record["argv"])}` ({len(runs)} runs, '
        f'{record["wall_seconds"] / 60:.1f} min wall time with '
        f'{record["processes"]} runs at a time; 1-min load average '
        f'{record["load"][0]:.1f} at the start, {record["load"][1]:.1f} at '
        'the end). Pretrained checkpoint: '
        + (f'`{record["pretrained"]}` (given)' if record.get('pretrained')
           and not record.get('pretrain_seconds', 0) > 60 else
           f'`{pretrain}`, trained in '
           f'{record.get("pretrain_seconds", 0) / 60:.1f} min') + '.'
        + ''.join(f' Renamed: {note}.' for note in record.get('renamed', []))
        + ''.join(f' Note: {note}.' for note in record.get('notes', [])))


def section(records: list[dict], figure_path: str | None) -> str:
    """The page's generated part: provenance of every record, the table."""
    runs = [run for record in records for run in record['runs']]
    machines = sorted({record['machine'] for record in records})
    lines = [f'Machine: {"; ".join(machines)}.', '']
    lines += [f'{"Command" if len(records) == 1 else f"Command {i + 1}"}: '
              f'{_provenance(record)}' for i, record in enumerate(records)]
    lines += [
        '', f'Every finetune: {runs[0]["job"]["iterations"] or "the configs"}'
        ' iterations, stem and '
        'layer1 frozen, `norm_eval=True`; the runs of a cell and a seed share '
        'the seed (bit-identical until the first shift or recycling). '
        f'Dead %: pre-ReLU channels never active on {NUM_IMAGES} val images '
        'at the end (the report\'s activation criterion), mean ± std over '
        'seeds; re-shifts: shifts of channels shifted before (in brackets: '
        'exactly one window after their previous shift); ReDo: units '
        'recycled.', '',
        table(runs)]
    paired = paired_table(runs)
    if paired:
        lines += ['', 'Paired differences over seeds (95% t intervals); '
                  '"healthy checkpoint, BN − BN" is what the inherited '
                  'collapse costs:', '', paired]
    if figure_path:
        lines += ['', f'![dead channels over training]({figure_path})']
    return '\n'.join(lines)


# ---------------------------------------------------------------------- CLI
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG,
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='one short cell: Adam + L2, seed 0, 60 '
                        'iterations, from a 100-iteration pretrain')
    parser.add_argument('--regimes', nargs='+', choices=list(REGIMES),
                        default=list(REGIMES))
    parser.add_argument('--norms', nargs='+', choices=list(FINETUNE),
                        default=list(DEFAULT_NORMS),
                        help='norms / recovery rules of every cell (default: '
                        '%(default)s)')
    parser.add_argument('--iterations', type=int, default=100,
                        help='finetune iterations (default: %(default)s; '
                        'the demo\'s configs train 200)')
    parser.add_argument('--pretrained', metavar='CHECKPOINT',
                        help='start every finetune from this checkpoint '
                        'instead of the pretrain config\'s finished run')
    parser.add_argument('--figures', help='directory for the PNG')
    parser.add_argument('--detector', choices=('faster', 'mask'),
                        default='faster',
                        help='the demo\'s Faster R-CNN, or its Mask R-CNN '
                        '(pretrained from random init when missing)')
    parser.add_argument('--starts', nargs='+',
                        choices=['pretrained', *STARTS],
                        default=['pretrained'],
                        help='checkpoints every cell starts from: the '
                        'pretrained one, or one made from it by 100 BN '
                        'iterations (collapsed: Adam + coupled L2; healthy: '
                        'SGD), made once and reused (default: %(default)s)')
    parser.add_argument('--healthy-norms', nargs='+', choices=list(FINETUNE),
                        default=['BN', 'psBN'],
                        help='norms of the cells from the healthy start '
                        '(default: %(default)s)')
    parser.add_argument('--evidence-regime', default='collapsed:sgd',
                        help='default: %(default)s')
    add_run_arguments(
        parser, 'data/demo', 'work_dirs/finetune_study', 2,
        'runs at a time (threads are split)', 'write the paired '
        'differences of --evidence-regime for the demo (psbn_mmdet.demo '
        'compare --evidence)')
    args = parser.parse_args(argv)
    check_run_arguments(args, ('figures', 'pretrained'))
    return args


def _source(args, records: list[dict]) -> str:
    """The evidence's source: the page and the records with runs of its
    regime."""
    paths = [os.path.relpath(path) for path, record in zip(
        args.from_json, records) if any(
            _start_regime(run['job']) == args.evidence_regime
            or run['job'].get('start') == 'healthy'
            for run in record['runs'])]
    return (f'{os.path.relpath(args.out)}, ' if args.out else '') + (
        'records in ' + ' '.join(paths))


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.from_json:
        records = read_records(args.from_json)
    else:
        json_path = args.json and Path(args.json)
        os.chdir(args.workspace)  # the configs read data/demo/ from here
        make_demo_data('data/demo', num_train=400, num_val=64)
        work_dirs = Path(args.work_dirs)
        load = os.getloadavg()[0]
        started = time.perf_counter()
        if args.quick:
            checkpoint = pretrained(work_dirs, iterations=100)
            jobs = grid(['adam_l2'], [0], iterations=60)
        else:
            checkpoint = args.pretrained or pretrained(
                work_dirs, config=PRETRAIN if args.detector == 'faster'
                else MASK_PRETRAIN)
            starts = [s if s in STARTS else '' for s in args.starts]
            jobs = sorted((job for start in starts for job in grid(
                args.regimes, args.seeds, args.iterations,
                args.healthy_norms if start == 'healthy' else args.norms,
                args.detector, start)), key=lambda job: job.seed)
        checkpoints = {'': checkpoint}
        for start in {job.start for job in jobs} - {''}:
            checkpoints[start] = start_checkpoint(start, checkpoint,
                                                  work_dirs)
        pretrain_seconds = time.perf_counter() - started

        def record(runs: list[dict], complete: bool) -> dict:
            return dict(machine=machine(), argv=list(argv),
                        processes=args.processes,
                        wall_seconds=time.perf_counter() - started,
                        pretrain_seconds=pretrain_seconds,
                        pretrained=os.path.relpath(checkpoint),
                        starts={start: os.path.relpath(path) for start, path
                                in checkpoints.items() if start},
                        load=[load, os.getloadavg()[0]], runs=runs,
                        **({} if complete else {'complete': False}))

        runs = run_all(jobs, checkpoints, work_dirs, args.processes,
                       saved=json_path and (lambda runs: write_record(
                           json_path, record(runs, False))))
        records = [record(runs, True)]
        if json_path:
            write_record(json_path, records[0])
    runs = [run for record in records for run in record['runs']]
    print(table(runs))
    print(paired_table(runs))
    if args.evidence:
        write_record(args.evidence, evidence(
            runs, args.evidence_regime, _source(args, records)))
    figure_path = None
    if args.figures:
        Path(args.figures).mkdir(parents=True, exist_ok=True)
        png = Path(args.figures) / 'demo_finetune_dead.png'
        png.write_bytes(figure(runs))
        if args.out:
            figure_path = os.path.relpath(png, Path(args.out).parent)
    if args.out:
        write_generated(args.out, 'finetune', section(records, figure_path),
                        title='Detection finetune benchmark: BN vs psBN')
    return 0

