"""Capacity study: width sweeps and collapse regimes on a harder task.

    python -m research.capacity_study --task shapes16 --network basicnet
        --widths 0.5 1 2 --regimes sgd --variants bn --seeds 0 1 2
        [--epochs 10] [--contribution] [--trace] --json docs/capacity_runs/NAME.json
    python -m research.capacity_study --summary RUNS.json [RUNS.json ...]
        [--control sgd]

Trains every (width, regime, variant, seed) in this process, one thread,
one run after the other, with :func:`research.collapse_study.training.run`;
the ``--json`` record is rewritten after each run (one object per run), so an
interrupted invocation keeps what it finished.  ``--contribution``: for psBN
runs, the :mod:`.contribution` probe.  ``--summary`` trains nothing: it
prints the tables of :mod:`.summary` from earlier records.
"""
import argparse
import functools
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from psbn_mmdet.cli import run_tool

from ..benchmark import machine
from .data import load_dataset
from ..collapse_study.networks import INPUT_SIZE
from ..collapse_study.training import REGIMES, Job, run
from ..collapse_study.variants import VARIANTS
from ..records import read_records
from . import summary
from .contribution import Contribution
from .data import TASKS
from .trace import RevivedTrace

PROG = 'capacity_study'


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG,
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--task', choices=sorted(TASKS), default='shapes16')
    parser.add_argument('--network', choices=sorted(INPUT_SIZE),
                        default='basicnet')
    parser.add_argument('--widths', type=float, nargs='+', default=[1.0])
    parser.add_argument('--regimes', nargs='+', choices=sorted(REGIMES),
                        default=['sgd'])
    parser.add_argument('--variants', nargs='+', choices=sorted(VARIANTS),
                        default=['bn'])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--epochs', type=int, default=10)
    parser.add_argument('--batch-size', type=int, default=40)
    parser.add_argument('--contribution', action='store_true',
                        help='psBN runs: zero the revived channels at the end')
    parser.add_argument('--pretrain', metavar='TASK:REGIME:EPOCHS',
                        help='finetune a BN network pretrained so (its '
                        'classifier drawn anew) instead of training from '
                        'scratch')
    parser.add_argument('--pairs', nargs='+', metavar='A:B',
                        help='--summary: the paired differences A − B '
                        '(default psBN, ReDo and BN)')
    parser.add_argument('--trace', action='store_true',
                        help='follow shifted (psBN) or dead (BN) channels\' '
                        'weight and gradient norms (.trace)')
    parser.add_argument('--json', help='the record, rewritten after each run')
    parser.add_argument('--summary', nargs='+', metavar='RUNS.json',
                        help='print the tables of earlier records')
    parser.add_argument('--control', default='sgd',
                        help='the no-collapse regime of --summary')
    return parser.parse_args(argv)


def train(args, argv: list[str]) -> dict:
    torch.set_num_threads(1)
    record = dict(command='python -m research.capacity_study ' + ' '.join(
        shlex.quote(a) for a in argv), machine=machine(), runs=[])
    jobs = [Job(args.network, regime, variant, seed, args.epochs,
                args.batch_size, args.task, width, args.pretrain)
            for width in args.widths for regime in args.regimes
            for variant in args.variants for seed in args.seeds]
    # generated once per process (cached): not part of any run's seconds
    data = load_dataset(args.task, INPUT_SIZE[args.network])
    started = time.perf_counter()
    for index, job in enumerate(jobs, 1):
        probes = []
        if args.contribution and VARIANTS[job.variant].psbn:
            probes.append(functools.partial(Contribution, data=data,
                                            seed=job.seed))
        if args.trace:
            probes.append(RevivedTrace)
        result = run(job, probes=probes)
        record['runs'].append(result)
        record['wall_seconds'] = time.perf_counter() - started
        print(f'[{index}/{len(jobs)}] {job.dataset} {job.network} '
              f'w{job.width:g} {job.regime}'
              f'{" after " + job.pretrain if job.pretrain else ""} '
              f'{job.variant} seed {job.seed}: '
              f'acc {result["test_acc"]:.2f}% dead {result["dead_pct"]:.1f}% '
              f'loss {result["loss_curve"][-1][1]:.3f} '
              f'({result["seconds"]:.0f} s)', flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(record, indent=1))
    return record


def print_summary(runs: list[dict], control: str, pairs=None) -> None:
    paired = (summary.paired_table(runs, [p.split(':') for p in pairs])
              if pairs else summary.paired_table(runs))
    for title, table in (
            ('Cells', summary.cell_table(runs)),
            (f'Collapse against the control ({control})',
             summary.effective_width_table(runs, control)),
            ('Paired differences', paired),
            ('Interventions', summary.intervention_table(runs)),
            ('Contribution of the revived channels',
             summary.contribution_table(runs))):
        if table.count('\n') > 1:
            print(f'\n### {title}\n\n{table}')


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.summary:
        runs = [r for record in read_records(args.summary)
                for r in record['runs']]
    else:
        runs = train(args, sys.argv[1:] if argv is None else list(argv))[
            'runs']
    print_summary(runs, args.control, args.pairs)
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(PROG, main))
