"""Collapse study: BN vs psBN and psBN's recovery candidates on digits, on CPU.

    python -m research.collapse_study [--quick] [--seeds N] [--processes 2]
        [--only VARIANT,...] [--network NAME] [--regime NAME]
        [--out docs/collapse_study.md]
        [--json OUT.json] [--figures docs/figures]
        [--from-json RUNS.json [RUNS.json ...]]

Trains the grid of :mod:`research.collapse_study.grid` (``--quick``:
BasicNet, Adam + L2, BN vs psBN, 2 seeds unless ``--seeds``), then writes the
results table, the set-up and the figures.  In ``--out``, only the text between
``<!-- study:begin -->`` and ``<!-- study:end -->`` is replaced, so the prose
around it stays; a file without those markers gets the section appended
(:func:`research.markdown.write_generated`).
``--only``, ``--network`` and ``--regime`` keep part of the grid (a
follow-up to an earlier run).  ``--from-json`` trains nothing: it renders
table, figures and section from earlier ``--json`` outputs, merged, with each
one's command, wall time and machine load.
"""
import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from psbn_mmdet.cli import run_tool
from psbn_mmdet.utils.errors import UserError

from ..benchmark import machine
from ..markdown import write_generated
from ..records import read_records
from . import grid as study_grid
from . import render
from .training import LR_DROP_FRACTION, REGIMES
from .variants import VARIANTS

PROG = 'collapse_study'


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG,
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='BasicNet, Adam + L2, BN vs psBN only')
    parser.add_argument('--seeds', type=positive_int, default=None,
                        help='seeds per cell (default: 3, quick: 2)')
    parser.add_argument('--epochs', type=positive_int, default=15)
    parser.add_argument('--processes', type=positive_int, default=2,
                        help='worker processes, one thread each')
    parser.add_argument('--only', help='comma-separated variants to keep')
    parser.add_argument('--network', choices=study_grid.NETWORKS,
                        help='keep the runs of this network only')
    parser.add_argument('--regime', choices=sorted(REGIMES),
                        help='keep the runs of this regime only')
    parser.add_argument('--out', help='markdown file for the results')
    parser.add_argument('--section', default='study',
                        help='the generated section of --out to write '
                        '(default: %(default)s; the first study\'s records '
                        'go to first_study)')
    parser.add_argument('--json', help='every run, curves included')
    parser.add_argument('--figures', help='directory for the PNG plots')
    parser.add_argument('--from-json', dest='from_json', nargs='+',
                        help='render earlier --json outputs, train nothing')
    return parser.parse_args(argv)


def train(args, argv: list[str]) -> dict:
    """Run the grid; return the record that ``--json`` saves."""
    seeds = args.seeds or (2 if args.quick else 3)
    grid = study_grid.quick_grid if args.quick else study_grid.full_grid
    jobs = grid(seeds=seeds, epochs=args.epochs)
    if args.only:
        keep = set(args.only.split(','))
        unknown = keep - set(VARIANTS)
        if unknown:
            raise UserError(f'unknown variant(s) '
                            f'{", ".join(sorted(unknown))}')
        jobs = [job for job in jobs if job.variant in keep]
    if args.network:
        jobs = [job for job in jobs if job.network == args.network]
    if args.regime:
        jobs = [job for job in jobs if job.regime == args.regime]
    if not jobs:
        raise UserError('no run of the grid matches '
                        '--only/--network/--regime')
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    runs = study_grid.run_jobs(jobs, processes=args.processes,
                          log=lambda line: print(line, flush=True))
    return dict(machine=machine(), argv=argv,
                wall_seconds=time.perf_counter() - started,
                processes=args.processes,
                load=[load_before, os.getloadavg()[0]], runs=runs)


def describe(record: dict) -> str:
    """One line per invocation: command, wall time, load, CPU time."""
    command = 'python -m research.collapse_study ' + ' '.join(
        shlex.quote(a) for a in record['argv'])
    runs = record['runs']
    line = (f'- `{command}`: {len(runs)} runs, wall time '
            f'{record["wall_seconds"] / 60:.1f} min with '
            f'{record.get("processes", 2)} worker processes of one thread')
    if 'load' in record:
        line += (f'; 1-min load average {record["load"][0]:.1f} at the '
                 f'start, {record["load"][1]:.1f} at the end')
    cpu = [r['cpu_seconds'] for r in runs if 'cpu_seconds' in r]
    if len(cpu) == len(runs):
        line += f'; CPU time of the runs {sum(cpu) / 60:.1f} min'
    for note in record.get('renamed', []):  # labels changed after the run
        line += f'. Renamed: {note}'
    return line


def results_section(records: list[dict], rows: list[dict], figure_names,
                    figures_dir, out_path) -> str:
    epochs = records[0]['runs'][0]['job']['epochs']
    machines = sorted({record['machine'] for record in records})
    lines = [f'Machine: {"; ".join(machines)}.', '',
             'Commands (run in this order; the table merges them):', '']
    lines += [describe(record) for record in records]
    lines += [
        '',
        f'Every run: {epochs} epochs (the last '
        f'{round(LR_DROP_FRACTION * epochs)} at lr / 10), batch 40; '
        'mean ± std over seeds (seeds per cell: '
        f'{max(r["seeds"] for r in rows)}).',
        '',
        render.markdown_table(rows),
        '',
        render.setup_description({row['variant'] for row in rows}),
        '',
    ]
    base = Path(out_path).parent
    for name in figure_names:
        path = os.path.relpath(Path(figures_dir) / name, base)
        lines.append(f'![{name}]({path})')
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_json:
        records = read_records(args.from_json)
    else:
        records = [train(args, sys.argv[1:] if argv is None else list(argv))]
        if args.json:
            Path(args.json).write_text(json.dumps(records[0], indent=1))
    runs = [run for record in records for run in record['runs']]
    rows = render.aggregate(runs)
    print(render.markdown_table(rows))
    for record in records:
        print(describe(record))
    figure_names = []
    if args.figures:
        os.makedirs(args.figures, exist_ok=True)
        for name, png in render.figures(runs).items():
            Path(args.figures, name).write_bytes(png)
            figure_names.append(name)
    if args.out:
        write_generated(args.out, args.section, results_section(
            records, rows, figure_names, args.figures, args.out),
            title='Collapse study')
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(PROG, main))
