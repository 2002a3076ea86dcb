"""What every cell of the detection study shares: the cfg-options of a
regime, the finished-checkpoint reuse, the pool that trains ``tools/train.py``
processes and records each run as it finishes, a run's numbers read back
from its work dir, and the table cells (mean ± sd, dead %)."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from psbn_mmdet.core import STAGES
from psbn_mmdet.demo import compare as demo
from psbn_mmdet.io import safe_load
from psbn_mmdet.utils import UserError

from ..processes import in_pool, train_process

REPO = Path(__file__).resolve().parents[2]  # research runs from the checkout
NUM_IMAGES = 64  # val images of the end-of-run dead-channel count


@dataclass(frozen=True)
class Regime:
    label: str
    options: tuple[str, ...]  # --cfg-options over the finetune configs


def optimizer_options(kind: str, replace: bool = True,
                      **values) -> tuple[str, ...]:
    """``--cfg-options`` setting the optimizer (``replace``: drop the
    config's own optimizer entries first)."""
    return (*(('optim_wrapper.optimizer._delete_=True',) if replace else ()),
            f'optim_wrapper.optimizer.type={kind}',
            *(f'optim_wrapper.optimizer.{k}={v}' for k, v in values.items()))


def step_options(iterations: int) -> tuple[str, ...]:
    """lr x0.1 at 75% of ``iterations`` (mmdet's step schedule)."""
    return ('param_scheduler._delete_=True',
            'param_scheduler.type=MultiStepLR',
            'param_scheduler.by_epoch=False', 'param_scheduler.begin=0',
            f'param_scheduler.end={iterations}',
            f'param_scheduler.milestones=[{int(iterations * 0.75)}]',
            'param_scheduler.gamma=0.1')


def iteration_options(iterations: int | None) -> list[str]:
    """Train ``iterations`` (None: the config's), validate and save at the
    end."""
    if iterations is None:
        return []
    return [f'train_cfg.max_iters={iterations}',
            f'train_cfg.val_interval={iterations}',
            f'default_hooks.checkpoint.interval={iterations}']


def trained_checkpoint(config: str, work_dir: Path, options: list[str],
                       threads: int = 1, check_config: bool = True,
                       message: str = '') -> str:
    """``work_dir``'s finished checkpoint of ``config`` (checked against
    the config's iterations where ``check_config``), else trained now."""
    try:
        return str(demo.check_pretrained(REPO / config, work_dir)
                   if check_config else demo.last_checkpoint(work_dir))
    except UserError:
        pass
    print(message or f'training {config} into {work_dir}', flush=True)
    train_process(config, work_dir, options, threads)
    return str(demo.last_checkpoint(work_dir))


def finished_seconds(work_dir: Path) -> float | None:
    """Wall seconds of a finished earlier run of ``work_dir`` (its run
    directory's start stamp to its last checkpoint), or None."""
    try:
        checkpoint = Path(demo.last_checkpoint(work_dir))
    except UserError:
        return None
    stamps = sorted(p.name for p in work_dir.iterdir() if p.is_dir())
    if not checkpoint.is_file() or not stamps:
        return None
    started = time.mktime(time.strptime(stamps[-1], '%Y%m%d_%H%M%S'))
    return checkpoint.stat().st_mtime - started


def read_run(name: str, work_dir: Path) -> dict:
    """A finished run's numbers, read back from its work dir: CocoMetric's
    bbox mAP (0 with ``no_detections`` where the detector output no box:
    AP is 0 by definition), dead pre-ReLU channels per stage on
    :data:`NUM_IMAGES` val images at the end (the report's activation
    criterion) and over training (the hooks' scalars), ReDo's recycled
    units and psBN's revived channels."""
    loaded = demo.load_run(name, work_dir)
    numbers = demo.summary(demo.measure([loaded], NUM_IMAGES))[name]
    checkpoint = safe_load(loaded.checkpoint)
    redo = checkpoint.get('redo') or {}
    empty = numbers['bbox_mAP'] is None
    return dict(
        checkpoint=os.path.relpath(loaded.checkpoint),  # of the workspace
        no_detections=empty,
        bbox_mAP=0.0 if empty else numbers['bbox_mAP'],
        bbox_mAP_50=0.0 if empty else numbers['bbox_mAP_50'],
        metrics=loaded.metrics, stages=numbers['stages'],
        dead_series=loaded.series['dead'], redo=redo,
        reshifts=checkpoint.get('reshifts') or {},  # research/reshifts.py
        recycled=redo.get('recycled'),
        revived=(checkpoint.get('revival') or {}).get('changed'))


def run_jobs(jobs: list, train, record, processes: int,
             saved=None) -> list[dict]:
    """``train(job)`` -> seconds for every job, ``processes`` at a time;
    each run is recorded (``record(job, seconds)``, in this process, one at
    a time) as it finishes, and ``saved(runs)`` keeps what finished (an
    interrupted study loses no run).  Returns the records in job order."""
    order = {job: index for index, job in enumerate(jobs)}
    runs: list[tuple[int, dict]] = []

    def finished(count: int, job, seconds) -> None:
        run = record(job, seconds)
        runs.append((order[job], run))
        runs.sort(key=lambda item: item[0])
        print(f'[{count}/{len(jobs)}] {job.name}: bbox mAP '
              f'{run["bbox_mAP"]:.3f}, dead {dead_pct(run):.1f}%, '
              f'{run["seconds"]:.0f} s'
              f'{" (reused)" if run.get("reused") else ""}', flush=True)
        if saved is not None:
            saved([r for _, r in runs])

    in_pool(jobs, train, processes, finished)
    return [r for _, r in runs]


def write_record(path: str | Path, record: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=1) + '\n')


# ---------------------------------------------------------------------- CLI
def add_run_arguments(parser: argparse.ArgumentParser, data: str,
                      work_dirs: str, processes: int, processes_help: str,
                      evidence_help: str) -> None:
    """The options every cell family has: seeds, processes, where the data
    and the runs go, the records and the page."""
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--processes', type=int, default=processes,
                        help=f'{processes_help} (default: %(default)s)')
    parser.add_argument('--workspace', default=str(REPO),
                        help=f'where {data} is (made when missing) and the '
                        'runs go (default: the checkout)')
    parser.add_argument('--work-dirs', default=work_dirs,
                        help='relative to --workspace (default: '
                        '%(default)s)')
    parser.add_argument('--json', help="write the invocation's record here "
                        '(rewritten after each run)')
    parser.add_argument('--out', help='markdown page for the results')
    parser.add_argument('--from-json', nargs='+',
                        help='render earlier --json records (merged), '
                        'train nothing')
    parser.add_argument('--evidence', metavar='OUT.json',
                        help=f'with --from-json: {evidence_help}')


def check_run_arguments(args: argparse.Namespace, paths=()) -> None:
    """Paths made absolute (the study changes into --workspace); --evidence
    without records and fewer than one process are one line each."""
    for name in ('json', 'out', 'workspace', 'evidence', *paths):
        if getattr(args, name):
            setattr(args, name, str(Path(getattr(args, name)).absolute()))
    if args.from_json:
        args.from_json = [str(Path(p).absolute()) for p in args.from_json]
    elif args.evidence:
        raise UserError('--evidence summarizes records: give --from-json')
    if args.processes < 1:
        raise UserError(f'--processes must be at least 1, got '
                        f'{args.processes}')


# ---------------------------------------------------------------- rendering
def mean_sd(values, digits: int = 3) -> str:
    """``mean ± sd`` of the values given (None left out), '–' for none."""
    values = [v for v in values if v is not None]
    if not values:
        return '–'
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f'{statistics.fmean(values):.{digits}f} ± {sd:.{digits}f}'


def trained_stages(runs: list[dict]) -> list[str]:
    """The stages no run froze."""
    return [s for s in STAGES
            if not any(r['stages'][s]['frozen'] for r in runs)]


def dead_pct(run: dict, stages=None) -> float:
    """Dead % of ``stages``' pre-ReLU channels (default: the run's trained
    stages)."""
    stages = trained_stages([run]) if stages is None else stages
    dead = sum(run['stages'][s]['dead'] for s in stages)
    total = sum(run['stages'][s]['pre_relu_channels'] for s in stages)
    return 100.0 * dead / total if total else 0.0


def rank(known, name: str) -> int:
    """``name``'s place in ``known`` (a dict's keys or a list); unknown names
    last."""
    names = list(known)
    return names.index(name) if name in names else len(names)
