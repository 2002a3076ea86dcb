"""The detection study's transfer cells (issue 23, issue 38): BN vs psBN's
rules vs ReDo on a source -> target transfer.

    python -m research.detection_study transfer [--quick] [--widths 1]
        [--regimes control adam_l2] [--norms BN psBN ReDo psBN_b]
        [--seeds 0 1 ...] [--iterations 200] [--val-images 500]
        [--processes 2] [--reuse] [--pretrained-map] [--json RUNS.json]
    python -m research.detection_study transfer --noise [--widths 1]
        [--json NOISE.json]
    python -m research.detection_study transfer --from-json RUNS.json ...
        [--out PAGE.md]
    python -m research.detection_study transfer --task solid5
        --starts healthy collapsed --regimes recipe
        --norms BN psBN_shift psBN_reinit_init psBN_auto ReDo ...

The demo's Faster R-CNN (ResNet-18, base width 16/32/64 for 0.5x/1x/2x) is
pretrained from random init on the *source* domain of the demo data's
textured task (:mod:`psbn_mmdet.demo.shapes`: 20 classes of shape x texture,
clutter, small and touching objects; ``research/configs/transfer/``) and
finetuned on its *target* domain (the same classes in another appearance) as
mmdet finetunes: stem and layer1 frozen, ``norm_eval=True``.  A cell is a
width, an optimizer regime (:data:`REGIMES`) and a norm (:data:`NORMS`);
the runs of a seed share it.  Every finetune is a ``tools/train.py``
process on one thread (``--processes`` at a time), evaluated on the first
``--val-images`` of the target val images (CocoMetric bbox mAP); dead
pre-ReLU channels are counted on 64 of them at the end
(:func:`psbn_mmdet.demo.compare.measure`).

``--pretrained-map`` also evaluates each width's source-pretrained detector
on the target val images (the finetune must beat it).  ``--noise`` measures
evaluation noise alone: one checkpoint (the 1x control finetune of seed 0,
or the pretrained detector) on the two disjoint halves of the target val
images.  Tables (cells; paired differences with 95% t intervals) are
rendered from the JSON records only.

Issue 38 (a task where capacity binds): ``--task`` picks an easier variant
of the textured task (:data:`TASKS`: fewer classes, no small objects; its
own configs ``research/configs/transfer/<task>_*.py``, data and val images),
and ``--starts`` finetunes not the source-pretrained checkpoint but one made
from it (:data:`STARTS`): ``N`` more BN iterations on the source with stem
and layer1 frozen and ``norm_eval=True``, under Adam + coupled L2 (the
*collapsed* checkpoint, its dead channels recorded) or SGD (the *healthy*
one).  The ``recipe`` regime is mmdet's finetune recipe (SGD + momentum,
lr 0.02, wd 1e-4, lr x0.1 at 75% of the iterations).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from psbn_mmdet.core import STAGES
from psbn_mmdet.demo import compare as demo
from psbn_mmdet.demo.data import make_demo_data
from psbn_mmdet.utils import UserError

from ..benchmark import machine
from ..markdown import write_generated
from ..processes import train_process
from ..records import read_records
from ..stats import interval, t_interval
from ..stats import paired as paired_differences
from .harness import (REPO, Regime, add_run_arguments,
                      check_run_arguments, dead_pct, finished_seconds,
                      iteration_options, mean_sd, optimizer_options, rank,
                      read_run, run_jobs, step_options, trained_checkpoint,
                      write_record)

PROG = 'detection_study transfer'
CONFIGS = 'research/configs/transfer'
PRETRAIN = f'{CONFIGS}/textured_source_pretrain.py'
#: the generated data: source (pretrain) and target (finetune) domains
DATA = {
    'source': dict(out_dir='data/textured/source', task='textured',
                   domain='source', image_size=(160, 120), num_train=2000,
                   num_val=200),
    'target': dict(out_dir='data/textured/target', task='textured',
                   domain='target', image_size=(160, 120), num_train=400,
                   num_val=1000),
}
PRETRAIN_ITERS = 1200


@dataclass(frozen=True)
class Task:
    """A data variant of the textured task with its configs
    (``{CONFIGS}/{name}_source_pretrain{width suffix}.py``,
    ``{name}_source_start.py``, ``{name}_target_finetune{_norm}.py``)."""
    data: dict  # 'source' / 'target' -> make_demo_data's arguments
    pretrain_iters: int
    val_images: int  # --val-images' default


_BIG10 = tuple(f'{texture}_{shape}'
               for shape in ('circle', 'square', 'triangle', 'star', 'cross')
               for texture in ('solid', 'stripes'))
#: --task: 'textured' is issue 23's (DATA, the configs' ``textured_*``);
#: the others are issue 38's candidates, screened in
#: docs/detection_screening.md
TASKS = {
    'textured': Task(DATA, PRETRAIN_ITERS, 500),
    # the 5 shapes solid or striped (10 classes), no small objects
    'big10': Task({
        'source': dict(out_dir='data/big10/source', task='textured',
                       domain='source', image_size=(160, 120),
                       num_train=1500, num_val=200, classes=_BIG10,
                       small=False),
        'target': dict(out_dir='data/big10/target', task='textured',
                       domain='target', image_size=(160, 120), num_train=200,
                       num_val=300, classes=_BIG10, small=False)},
        1000, 200),
}
# big10's data, pretrained 3x longer (big10's pretrain left the detector at
# 0.28 source bbox mAP)
TASKS['big10_long'] = Task(TASKS['big10'].data, 3000, 200)
# the 5 shapes, solid (random colours): 5 classes, no small objects
_SOLID5 = tuple(f'solid_{shape}'
                for shape in ('circle', 'square', 'triangle', 'star', 'cross'))
TASKS['solid5'] = Task({
    domain: dict(spec, out_dir=f'data/solid5/{domain}', classes=_SOLID5)
    for domain, spec in TASKS['big10'].data.items()}, 2000, 200)
#: width multiplier -> (config suffix, ResNet-18 base_channels)
WIDTHS = {0.5: ('_w05', 16), 1.0: ('', 32), 2.0: ('_w2', 64)}
#: norm -> the 1x finetune config (other widths: + :func:`width_options`)
NORMS = {'BN': f'{CONFIGS}/textured_target_finetune.py',
         'psBN': f'{CONFIGS}/textured_target_finetune_psbn.py',
         'ReDo': f'{CONFIGS}/textured_target_finetune_redo.py',
         # psBN + the classification study's revival rule (b)
         'psBN_b': f'{CONFIGS}/textured_target_finetune_psbn_b.py'}
#: issue 38: psBN with a named revival rule (``psBN`` is the product's
#: default of the day, these name theirs), the psBN config with
#: ``norm_cfg.revival`` set
REVIVALS = {'psBN_shift': 'shift', 'psBN_reinit_init': 'reinit_init',
            'psBN_auto': 'auto'}
NORMS.update({norm: NORMS['psBN'] for norm in REVIVALS})
PAIRS = (('psBN', 'BN'), ('ReDo', 'BN'), ('psBN', 'ReDo'))
#: the rule's pairs, in the tables where it ran (not in the demo's evidence)
RULE_PAIRS = (('psBN_b', 'BN'), ('psBN_b', 'psBN'),
              *((norm, 'BN') for norm in REVIVALS),
              *((norm, 'ReDo') for norm in REVIVALS))


RECIPE_ITERS = 200  # the recipe's iterations unless --iterations says


#: declared before the runs (docs/transfer_study_notes.md): the control is
#: the configs' own optimizer
REGIMES = {
    'control': Regime('SGD+m, lr 0.01 (control)', ()),
    'sgd_high': Regime('SGD+m, lr 0.1 (large lr)', optimizer_options(
        'SGD', lr=0.1, momentum=0.9, weight_decay=1e-4)),
    'adam_l2': Regime('Adam lr 2e-3 + coupled L2 5e-3', optimizer_options(
        'Adam', lr=2e-3, weight_decay=5e-3)),
    # lr 0.1 diverged; the large-lr regime is the largest of these at which
    # BN seed 0 does not diverge (declared in docs/transfer_study_notes.md)
    **{f'sgd_lr{lr:g}': Regime(f'SGD+m, lr {lr:g} (large lr)', optimizer_options(
        'SGD', lr=lr, momentum=0.9, weight_decay=1e-4))
       for lr in (0.05, 0.03, 0.02)},
    # the large lr as mmdet's configs run it: linear warm-up from 0.001x
    # (here over the first quarter of the 200 iterations)
    **{f'sgd_warmup_lr{lr:g}': Regime(
        f'SGD+m, lr {lr:g}, warm-up 50 it (large lr)', (*optimizer_options(
            'SGD', lr=lr, momentum=0.9, weight_decay=1e-4),
            'param_scheduler._delete_=True', 'param_scheduler.type=LinearLR',
            'param_scheduler.start_factor=0.001',
            'param_scheduler.by_epoch=False', 'param_scheduler.begin=0',
            'param_scheduler.end=50'))
       for lr in (0.1, 0.05)},
    # issue 38: mmdet's finetune recipe, the step at 75% of the iterations
    # (finetune() moves it with --iterations)
    'recipe': Regime('SGD+m, lr 0.02, ×0.1 at 75% (mmdet recipe)', (
        *optimizer_options('SGD', lr=0.02, momentum=0.9, weight_decay=1e-4),
        *step_options(RECIPE_ITERS))),
}


@dataclass(frozen=True)
class Start:
    """A checkpoint the finetunes start from, made from the width's
    source-pretrained one by ``{task}_source_start.py`` (its iterations on
    the source, stem and layer1 frozen, ``norm_eval=True``, constant lr,
    seed 0) under ``options`` (``--cfg-options`` over that config)."""
    label: str
    options: tuple[str, ...]


#: issue 38's starts (as research/detection_study/demo.py's STARTS for the demo)
STARTS = {
    'collapsed': Start('collapsed checkpoint (Adam + coupled L2)', optimizer_options(
        'Adam', lr=2e-3, weight_decay=5e-3)),
    'healthy': Start('healthy checkpoint (SGD)', ()),  # the config's SGD
}


@dataclass(frozen=True)
class Job:
    width: float
    regime: str
    norm: str
    seed: int
    iterations: int | None = None  # None: the config's
    task: str = 'textured'  # a TASKS key
    start: str = ''  # a STARTS key; '': the source-pretrained checkpoint

    @property
    def name(self) -> str:
        prefix = '' if self.task == 'textured' else f'{self.task}_'
        prefix += f'{self.start}_' if self.start else ''
        return (f'{prefix}w{self.width:g}_{self.regime}_{self.norm.lower()}_'
                f'seed{self.seed}')


def grid(widths, regimes, norms, seeds, iterations=None, task='textured',
         starts=('',)) -> list[Job]:
    return [Job(float(w), r, n, s, iterations, task, start)
            for w in widths for start in starts for r in regimes
            for s in seeds for n in norms]


def config(task: str, kind: str, width: float = 1.0, norm: str = 'BN'
           ) -> str:
    """A config of ``task``: ``kind`` 'source_pretrain' (the width's),
    'source_start' or 'target_finetune' (the norm's, at 1x:
    :func:`width_options` makes the width)."""
    if kind == 'target_finetune':
        name = NORMS[norm]
        return name if task == 'textured' else name.replace(
            'textured_target_finetune', f'{task}_target_finetune')
    suffix = WIDTHS[width][0] if kind == 'source_pretrain' else ''
    name = f'{CONFIGS}/{task}_{kind}{suffix}.py'
    if not (REPO / name).is_file():
        raise UserError(f'task {task!r} has no {kind} config at '
                        f'{width:g}x ({name})')
    return name


def width_options(width: float, pretrain_dir: str = 'work_dirs/transfer',
                  task: str = 'textured') -> list[str]:
    """``--cfg-options`` turning a 1x config into ``width``'s, loading that
    width's source-pretrained checkpoint."""
    suffix, base = WIDTHS[width]
    return [f'model.backbone.base_channels={base}',
            'model.neck.in_channels=[' + ','.join(
                str(base * 2**i) for i in range(4)) + ']',
            f'load_from={pretrain_dir}/{task}_source_pretrain{suffix}/'
            f'iter_{TASKS[task].pretrain_iters}.pth']


# ------------------------------------------------------------------ running
def prepare_data(quick: bool = False, task: str = 'textured') -> None:
    for spec in TASKS[task].data.values():
        spec = dict(spec)
        if quick:  # the test: a few images of each
            spec.update(num_train=16, num_val=8)
        make_demo_data(spec.pop('out_dir'), **spec)


def val_subset(first: int, last: int, out_dir: Path,
               task: str = 'textured') -> str:
    """An annotation file of target val images ``first..last`` (ids), absolute."""
    source = Path(TASKS[task].data['target']['out_dir']) / \
        'annotations/instances_val.json'
    coco = json.loads(source.read_text())
    ids = set(range(first, last + 1))
    if not ids <= {image['id'] for image in coco['images']}:
        raise UserError(f'{source}: has no images {first}..{last}')
    coco['images'] = [i for i in coco['images'] if i['id'] in ids]
    coco['annotations'] = [a for a in coco['annotations']
                           if a['image_id'] in ids]
    prefix = '' if task == 'textured' else f'{task}_'
    path = out_dir / f'{prefix}instances_val_{first}_{last}.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coco))
    return str(path.absolute())


def val_options(ann_file: str) -> list[str]:
    return [f'val_dataloader.dataset.ann_file={ann_file}',
            f'val_evaluator.ann_file={ann_file}',
            f'test_dataloader.dataset.ann_file={ann_file}',
            f'test_evaluator.ann_file={ann_file}']


def pretrained(width: float, work_dirs: Path, iterations: int | None = None,
               task: str = 'textured') -> str:
    """The width's source-pretrained checkpoint: reused when finished."""
    config_ = config(task, 'source_pretrain', width)
    work_dir = work_dirs / Path(config_).stem
    if iterations is not None:
        work_dir = work_dir.with_name(f'{work_dir.name}_{iterations}')
    return trained_checkpoint(
        config_, work_dir, iteration_options(
            iterations or TASKS[task].pretrain_iters),
        check_config=iterations is None,
        message=f'pretraining {config_} into {work_dir}')


def start_name(task: str, start: str, width: float) -> str:
    """The work dir (under the work dirs) of a start checkpoint."""
    return f'{task}_start_{start}{WIDTHS[width][0]}'


def start_checkpoint(task: str, start: str, width: float, pretrained_: str,
                     work_dirs: Path) -> str:
    """The checkpoint of ``STARTS[start]`` at ``width``: reused when
    finished, else made from ``pretrained_`` (one thread)."""
    config_ = config(task, 'source_start')
    work_dir = work_dirs / start_name(task, start, width)
    return trained_checkpoint(
        config_, work_dir, [
            *width_options(width, task=task)[:2], f'load_from={pretrained_}',
            'randomness.seed=0', *STARTS[start].options],
        check_config=width == 1.0,
        message=f'making the {STARTS[start].label} at {width:g}x into '
        f'{work_dir}')


def start_record(task: str, start: str, width: float, work_dirs: Path
                 ) -> dict:
    """A start checkpoint's dead channels, on 64 of its (source) val
    images, as a finetune's record has them."""
    work_dir = work_dirs / start_name(task, start, width)
    run = read_run(work_dir.name, work_dir)
    return dict(task=task, start=start, width=width,
                checkpoint=run['checkpoint'],
                seconds=finished_seconds(work_dir),
                source_bbox_mAP=run['metrics'].get('coco/bbox_mAP'),
                source_bbox_mAP_50=run['metrics'].get('coco/bbox_mAP_50'),
                stages=run['stages'], dead_series=run['dead_series'])


def finetune(job: Job, checkpoint: str, ann_file: str,
             work_dirs: Path) -> float:
    options = [*width_options(job.width)[:2], f'load_from={checkpoint}',
               f'randomness.seed={job.seed}', *val_options(ann_file),
               *REGIMES[job.regime].options]
    if job.norm in REVIVALS:
        options.append(f'model.backbone.norm_cfg.revival={REVIVALS[job.norm]}')
    options += iteration_options(job.iterations)
    if job.iterations is not None and job.regime == 'recipe':
        options += step_options(job.iterations)  # the step stays at 75%
    return train_process(config(job.task, 'target_finetune', norm=job.norm),
                         work_dirs / job.name, options)


def record(job: Job, work_dirs: Path, seconds: float) -> dict:
    """A finished job's record, read back from its work dir."""
    run = read_run(job.name, work_dirs / job.name)
    return dict(
        job=asdict(job), seconds=seconds,
        no_detections=run['no_detections'], bbox_mAP=run['bbox_mAP'],
        bbox_mAP_50=run['bbox_mAP_50'],
        bbox_mAP_s=run['metrics'].get('coco/bbox_mAP_s'),
        stages=run['stages'], dead_series=run['dead_series'],
        recycled=run['recycled'], revived=run['revived'])


def evaluate(config: str, checkpoint: str, options: list[str],
             work_dir: Path) -> dict:
    """CocoMetric of ``checkpoint`` under ``config`` (mmengine's test loop,
    in this process)."""
    from mmengine.config import DictAction
    from mmengine.runner import Runner

    from psbn_mmdet.utils.config import load_config
    cfg = load_config(REPO / config)
    parser = argparse.ArgumentParser()  # tools/train.py's --cfg-options
    parser.add_argument('--options', nargs='+', action=DictAction)
    cfg.merge_from_dict(parser.parse_args(['--options', *(
        option for option in options
        if not option.startswith('load_from='))]).options)
    cfg.load_from, cfg.work_dir = checkpoint, str(work_dir)
    started = time.perf_counter()
    metrics = Runner.from_cfg(cfg).test()
    return dict(seconds=time.perf_counter() - started,
                **{k: float(v) for k, v in metrics.items()})


# ---------------------------------------------------------------- rendering
def _task_start(job: dict) -> tuple[str, str]:
    return job.get('task', 'textured'), job.get('start', '')


def _cells(runs: list[dict]) -> dict[tuple, list[dict]]:
    """(width, regime, norm, iterations, task, start) -> runs."""
    grouped = defaultdict(list)
    for run in runs:
        job = run['job']
        grouped[(job['width'], job['regime'], job['norm'],
                 job['iterations'], *_task_start(job))].append(run)
    return dict(sorted(grouped.items(), key=lambda kv: (
        rank(TASKS, kv[0][4]), kv[0][0], rank(STARTS, kv[0][5]),
        rank(REGIMES, kv[0][1]), rank(NORMS, kv[0][2]), kv[0][3] or 0)))


def _width(width: float, task: str) -> str:
    """The width column: the task too where it is not issue 23's."""
    return f'{width:g}x' if task == 'textured' else f'{task} {width:g}x'


def _regime(regime: str, start: str) -> str:
    label = REGIMES[regime].label if regime in REGIMES else regime
    return f'{label}, from the {start} checkpoint' if start else label


def cell_table(runs: list[dict]) -> str:
    lines = ['| width | regime | norm | iterations | seeds | bbox mAP | '
             'mAP@50 | dead % (trained stages) | min / run |',
             '|' + '---|' * 9]
    for (width, regime, norm, iterations, task, start), group in \
            _cells(runs).items():
        lines.append(
            f'| {_width(width, task)} | {_regime(regime, start)} | {norm} | '
            f'{iterations or "config"} | '
            f'{len(group)} | {mean_sd([r["bbox_mAP"] for r in group])} | '
            f'{mean_sd([r["bbox_mAP_50"] for r in group])} | '
            f'{mean_sd([dead_pct(r) for r in group], 1)} | '
            f'{statistics.fmean(r["seconds"] for r in group) / 60:.1f} |')
    return '\n'.join(lines)


def by_seed(runs: list[dict]) -> dict[tuple, dict[str, dict[int, dict]]]:
    """(width, regime, iterations, task, start) -> norm -> seed -> run, in
    REGIMES order."""
    by_cell = defaultdict(lambda: defaultdict(dict))
    for run in runs:
        job = run['job']
        by_cell[(job['width'], job['regime'], job['iterations'],
                 *_task_start(job))][job['norm']][job['seed']] = run
    return dict(sorted(by_cell.items(), key=lambda kv: (
        rank(TASKS, kv[0][3]), kv[0][0], rank(STARTS, kv[0][4]),
        rank(REGIMES, kv[0][1]), kv[0][2] or 0)))


def paired_table(runs: list[dict], pairs=PAIRS + RULE_PAIRS) -> str:
    lines = ['| width | regime | iterations | difference | pairs | bbox mAP, '
             'mean [95% t interval] | dead % (points) |', '|' + '---|' * 7]
    for (width, regime, iterations, task, start), norms in \
            by_seed(runs).items():
        for a, b in pairs:
            mAP = paired_differences(norms, a, b, lambda r: r['bbox_mAP'])
            if not mAP:
                continue
            dead = paired_differences(norms, a, b, dead_pct)
            label = f'{regime}, {start}' if start else regime
            lines.append(f'| {_width(width, task)} | {label} | '
                         f'{iterations or "config"} | {a} − {b} | {len(mAP)}'
                         f' | {interval(mAP)} | {interval(dead, 1)} |')
    return '\n'.join(lines)


def start_table(runs: list[dict]) -> str:
    """Issue 38's cost of collapse: healthy − collapsed start, paired by
    seed, per (task, width, regime, norm, iterations); '' without both."""
    by_start = defaultdict(lambda: defaultdict(dict))
    for run in runs:
        job = run['job']
        task, start = _task_start(job)
        if start:
            by_start[(task, job['width'], job['regime'], job['norm'],
                      job['iterations'])][start][job['seed']] = run
    lines = ['| task, width | regime | norm | iterations | difference | '
             'pairs | per seed | bbox mAP, mean [95% t interval] | '
             'dead % (points) |', '|' + '---|' * 9]
    for (task, width, regime, norm, iterations), starts in sorted(
            by_start.items(), key=lambda kv: (
                rank(TASKS, kv[0][0]), kv[0][1], rank(REGIMES, kv[0][2]),
                rank(NORMS, kv[0][3]), kv[0][4] or 0)):
        mAP = paired_differences(starts, 'healthy', 'collapsed',
                                 lambda r: r['bbox_mAP'])
        if not mAP:
            continue
        dead = paired_differences(starts, 'healthy', 'collapsed', dead_pct)
        lines.append(f'| {_width(width, task)} | {regime} | {norm} | '
                     f'{iterations or "config"} | healthy − collapsed | '
                     f'{len(mAP)} | {", ".join(f"{d:+.3f}" for d in mAP)} | '
                     f'{interval(mAP)} | {interval(dead, 1)} |')
    return '\n'.join(lines) if len(lines) > 2 else ''


def starts_table(records: list[dict]) -> str:
    """The start checkpoints (issue 38): dead channels on their source val
    images, the seconds they took."""
    rows = {(r['task'], r['width'], r['start']): r for record in records
            for r in record.get('starts', [])}
    if not rows:
        return ''
    lines = ['| task, width | start checkpoint | dead % (layer2-4) | '
             'dead per stage (layer2, layer3, layer4) | source bbox mAP | '
             'min |', '|' + '---|' * 6]
    for (task, width, start), r in sorted(rows.items(), key=lambda kv: (
            rank(TASKS, kv[0][0]), kv[0][1], rank(STARTS, kv[0][2]))):
        stages = r['stages']
        per_stage = ', '.join(
            f'{stages[s]["dead"]}/{stages[s]["pre_relu_channels"]}'
            for s in STAGES if not stages[s]['frozen'])
        source, seconds = r.get('source_bbox_mAP'), r.get('seconds')
        label = STARTS[start].label if start in STARTS else start
        lines.append(
            f'| {_width(width, task)} | {label} | {dead_pct(r):.1f} | '
            f'{per_stage} | '
            f'{"–" if source is None else format(source, ".3f")} | '
            f'{"–" if seconds is None else format(seconds / 60, ".1f")} |')
    return '\n'.join(lines)


#: issue 38's evidence of a collapsed-start cell (D1): what collapse costs,
#: then the rules and the peer against BN, the default against ReDo
START_PAIRS = (('healthy checkpoint, BN', 'BN'), ('psBN_reinit_init', 'BN'),
               ('psBN_reinit_init', 'ReDo'), ('psBN_auto', 'BN'),
               ('psBN_shift', 'BN'), ('ReDo', 'BN'))


#: a collapsed-start cell's healthy control, as the demo family names it
HEALTHY = 'healthy checkpoint, BN'


def with_healthy_control(cells: dict, key: tuple) -> dict:
    """The norms of :func:`by_seed`'s cell ``key``; a collapsed-start cell
    also holds the healthy start's BN runs as :data:`HEALTHY` (paired by
    seed: what collapse costs)."""
    width, regime, iterations, task, start = key
    norms = dict(cells.get(key, {}))
    healthy = cells.get((width, regime, iterations, task, 'healthy'), {})
    if start == 'collapsed' and 'BN' in healthy:
        norms[HEALTHY] = healthy['BN']
    return norms


def _label(norm: str) -> str:
    """A norm as the demo's evidence names it (psBN's rules as
    ``psBN revival=<rule>``, the demo family's labels)."""
    return f'psBN revival={REVIVALS[norm]}' if norm in REVIVALS else norm


def evidence(runs: list[dict], regime: str, source: str,
             task: str = 'textured', start: str = '') -> dict:
    """The summary ``python -m psbn_mmdet.demo compare --evidence`` prints
    under the demo's one-seed table (``psbn_mmdet.demo.compare.read_evidence``
    reads it): each pair's mean and 95% t interval in ``regime`` at 1x, of
    issue 23's task (:data:`PAIRS`) or of ``task`` from ``start``
    (:data:`START_PAIRS`, the healthy start's BN runs as the healthy
    checkpoint, paired by seed)."""
    norms = with_healthy_control(by_seed(runs),
                                 (1.0, regime, None, task, start))
    differences, seeds = [], set()
    for a, b in START_PAIRS if start else PAIRS:
        diffs = paired_differences(norms, a, b, lambda r: r['bbox_mAP'])
        if len(diffs) < 2:
            continue
        mean, low, high = t_interval(diffs)
        differences.append(dict(name=f'{_label(a)} − {_label(b)}', mean=mean,
                                low=low, high=high))
        seeds.add(len(diffs))
    if not differences:
        raise UserError(f'no paired seeds of task {task!r}, regime '
                        f'{regime!r}{f", start {start!r}" if start else ""} '
                        'in the records')
    if task == 'textured':
        return dict(setting=f'the demo detector finetuned under '
                    f'{REGIMES[regime].label} (textured transfer task, 1x, '
                    '500 target val images)', source=source,
                    metric='bbox mAP', seeds=min(seeds),
                    differences=differences)
    data = TASKS[task].data['target']
    return dict(
        setting=f'the {task} transfer task: the demo detector at 1x, '
        f'{STARTS[start].label if start else "source-pretrained"}, finetuned '
        f'{data["num_train"]} target images under {REGIMES[regime].label} '
        f'({TASKS[task].val_images} target val images)', source=source,
        metric='bbox mAP', seeds=min(seeds), differences=differences,
        note='A cell where collapse costs mAP, not run by this demo (its '
        f'source pretrain alone is {TASKS[task].pretrain_iters} '
        'iterations): read it beside the one-seed table above, not '
        'against it.')


def pretrained_table(records: list[dict]) -> str:
    rows = [(r['width'], r) for record in records
            for r in record.get('pretrained_eval', [])]
    if not rows:
        return ''
    lines = ['| width | pretrained on source, target bbox mAP | mAP@50 | '
             'val images |', '|---|---|---|---|']
    for width, r in sorted(rows, key=lambda x: (
            rank(TASKS, x[1].get('task', 'textured')), x[0])):
        lines.append(f'| {_width(width, r.get("task", "textured"))} | '
                     f'{r["coco/bbox_mAP"]:.3f} | '
                     f'{r["coco/bbox_mAP_50"]:.3f} | {r["val_images"]} |')
    return '\n'.join(lines)


def unique_runs(records: list[dict]) -> list[dict]:
    """The records' runs, one per job: a run recorded again (``--reuse``,
    a screening run reused by its cell) counts once, the later record's."""
    runs = {}
    for record in records:
        for run in record.get('runs', []):
            runs[Job(**run['job'])] = run
    return list(runs.values())


def render(records: list[dict]) -> str:
    runs = unique_runs(records)
    parts = [f'Machine: {"; ".join(sorted({r["machine"] for r in records}))}'
             '.', '']
    parts += [f'- `python -m research.detection_study transfer {shlex.join(r["argv"])}`'
              f' ({len(r.get("runs", []))} runs, '
              f'{r["wall_seconds"] / 60:.1f} min)' for r in records]
    for table in (pretrained_table(records), starts_table(records),
                  cell_table(runs) if runs else '',
                  paired_table(runs) if runs else '',
                  start_table(runs) if runs else ''):
        if table.count('\n') >= 2:  # a row under the header
            parts += ['', table]
    return '\n'.join(parts)


# ---------------------------------------------------------------------- CLI
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG,
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='the test: 16-image data, a 20-iteration 0.5x '
                        'pretrain, BN and psBN for 10 iterations (Adam + L2)')
    parser.add_argument('--widths', nargs='+', type=float, default=[1.0],
                        choices=list(WIDTHS))
    parser.add_argument('--regimes', nargs='+', choices=list(REGIMES),
                        default=['control', 'adam_l2'])
    parser.add_argument('--norms', nargs='+', choices=list(NORMS),
                        default=['BN', 'psBN', 'ReDo'])
    parser.add_argument('--task', choices=list(TASKS), default='textured',
                        help='the data variant and its configs (default: '
                        "issue 23's %(default)s)")
    parser.add_argument('--starts', nargs='+', choices=list(STARTS),
                        help='finetune these start checkpoints (made from '
                        'the source-pretrained one, reused when finished) '
                        'instead of the source-pretrained checkpoint')
    parser.add_argument('--iterations', type=int,
                        help="finetune iterations (default: the config's)")
    parser.add_argument('--val-images', type=int,
                        help='the first N target val images for mAP '
                        "(default: the task's, 500 for textured)")
    parser.add_argument('--pretrained-map', action='store_true',
                        help="evaluate each width's pretrained detector on "
                        'the target val images too')
    parser.add_argument('--noise', action='store_true',
                        help='evaluation noise: the pretrained detector and '
                        'the control finetune of seed 0 on the two halves '
                        'of the target val images; no training')
    parser.add_argument('--reuse', action='store_true',
                        help='record a job whose work dir already holds its '
                        'finished run instead of training it again')
    parser.add_argument('--evidence-regime', choices=list(REGIMES),
                        default='adam_l2')
    parser.add_argument('--evidence-start', choices=list(STARTS),
                        help="with --evidence and --task: the cell's start "
                        '(its summary adds the healthy start as the healthy '
                        'checkpoint)')
    add_run_arguments(
        parser, 'data/<task>/', 'work_dirs/transfer', 1,
        'finetunes at a time, one thread each', "write the demo's summary "
        'of the --evidence-regime cell (psbn_mmdet.demo compare --evidence '
        'reads it)')
    args = parser.parse_args(argv)
    check_run_arguments(args)
    task = TASKS[args.task]
    if args.val_images is None:
        args.val_images = task.val_images
    if not 1 <= args.val_images <= task.data['target']['num_val']:
        raise UserError(f'--val-images must be in 1..'
                        f'{task.data["target"]["num_val"]}, got '
                        f'{args.val_images}')
    if args.starts and (args.quick or args.task == 'textured'):
        raise UserError('--starts needs --task (not textured) and no '
                        '--quick')
    return args


def run(args, argv) -> dict:
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the in-process evaluations
    try:
        return _run(args, argv)
    finally:
        torch.set_num_threads(threads)


def _run(args, argv) -> dict:
    os.chdir(args.workspace)  # the configs read data/ from here
    started, load = time.perf_counter(), os.getloadavg()[0]
    prepare_data(args.quick, args.task)
    work_dirs = Path(args.work_dirs)
    subsets = work_dirs / 'annotations'
    result = dict(machine=machine(), argv=list(argv), runs=[],
                  pretrained_eval=[], noise=[])
    if args.task != 'textured':  # issue 23's records stay as they were
        result.update(task=args.task, starts=[])
    if args.quick:
        args.widths, args.val_images = [0.5], 8
        jobs = grid([0.5], ['adam_l2'], ['BN', 'psBN'], [0], iterations=10)
        checkpoints = {0.5: pretrained(0.5, work_dirs / 'quick', 20)}
        work_dirs = work_dirs / 'quick'
    else:
        jobs = grid(args.widths, args.regimes, args.norms, args.seeds,
                    args.iterations, args.task, args.starts or ('',))
        checkpoints = {w: pretrained(w, work_dirs, task=args.task)
                       for w in args.widths}
    ann_file = val_subset(1, args.val_images, subsets, args.task)
    if args.pretrained_map or args.noise:
        num_val = TASKS[args.task].data['target']['num_val']
        halves = ([(1, num_val // 2), (num_val // 2 + 1, num_val)]
                  if args.noise else [(1, args.val_images)])
        for width in args.widths:
            suffix, _ = WIDTHS[width]
            if args.task == 'textured':
                config_ = f'{CONFIGS}/textured_target_finetune{suffix}.py'
                widened = []
            else:
                config_ = config(args.task, 'target_finetune')
                widened = width_options(width, task=args.task)[:2]
            targets = [('pretrained', checkpoints[width])]
            if args.noise:
                control = work_dirs / Job(width, 'control', 'BN', 0).name
                targets.append(('control seed 0',
                                str(demo.last_checkpoint(control))))
            for label, checkpoint in targets:
                for first, last in halves:
                    metrics = evaluate(
                        config_, checkpoint, [*widened, *val_options(
                            val_subset(first, last, subsets, args.task))],
                        work_dirs / 'eval')
                    entry = dict(width=width, label=label,
                                 checkpoint=os.path.relpath(checkpoint),
                                 val_images=last - first + 1,
                                 first=first, last=last, **metrics)
                    if args.task != 'textured':
                        entry['task'] = args.task
                    result['noise' if args.noise else
                           'pretrained_eval'].append(entry)
                    print(json.dumps(entry), flush=True)
    if args.starts and not args.noise:
        # the start checkpoints, made one at a time, recorded once each
        starts = {}
        for width in args.widths:
            for start in args.starts:
                starts[(width, start)] = start_checkpoint(
                    args.task, start, width, checkpoints[width], work_dirs)
                entry = start_record(args.task, start, width, work_dirs)
                result['starts'].append(entry)
                print(f'{start_name(args.task, start, width)}: dead '
                      f'{dead_pct(entry):.1f}% of layer2-4', flush=True)
        checkpoints = starts
    if not args.noise:
        finetune_all(jobs, checkpoints, ann_file, work_dirs, args, result,
                 partial=lambda: args.json and write_record(args.json, dict(
                     result, wall_seconds=time.perf_counter() - started,
                     load=[load, os.getloadavg()[0]],
                     val_images=args.val_images, complete=False)))
    result.update(wall_seconds=time.perf_counter() - started,
                  load=[load, os.getloadavg()[0]], val_images=args.val_images,
                  complete=True)
    return result


def finetune_all(jobs: list[Job], checkpoints: dict, ann_file: str,
                 work_dirs: Path, args, result: dict, partial) -> None:
    """Finetune the jobs ``args.processes`` at a time (one thread each),
    each recorded as it finishes into ``result['runs']`` (job order), which
    ``partial()`` saves: an interrupted study keeps what finished."""

    def one(job: Job) -> tuple[float, bool]:
        seconds = (finished_seconds(work_dirs / job.name) if args.reuse
                   else None)
        if seconds is not None:
            return seconds, True
        checkpoint = checkpoints[(job.width, job.start) if job.start
                                 else job.width]
        return finetune(job, checkpoint, ann_file, work_dirs), False

    def saved(runs: list[dict]) -> None:
        result['runs'] = runs
        partial()

    run_jobs(jobs, one, lambda job, value: dict(
        record(job, work_dirs, value[0]), reused=value[1]),
        args.processes, saved)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.from_json:
        records = read_records(args.from_json)
    else:
        records = [run(args, argv)]
        if args.json:
            write_record(args.json, records[0])
    text = render(records)
    print(text)
    if args.evidence:
        runs = unique_runs(records)
        write_record(args.evidence, evidence(
            runs, args.evidence_regime, ''.join(
                [f'{os.path.relpath(args.out)}, '] if args.out else [])
            + 'records in ' + ' '.join(sorted({
                f'{os.path.relpath(Path(path).parent)}/'
                for path in args.from_json})),
            args.task, args.evidence_start or ''))
    if args.out:
        write_generated(args.out, 'transfer', text,
                        title='Transfer finetune benchmark: BN, psBN, ReDo')
    return 0
