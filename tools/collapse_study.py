"""Collapse study: BN vs psBN and psBN's recovery candidates on digits, on CPU.

    python tools/collapse_study.py [--quick] [--seeds N] [--processes 2]
        [--out docs/collapse_study.md] [--json OUT.json]
        [--figures docs/figures] [--from-json RUNS.json]

Trains the grid of :mod:`psbn_mmdet.study` (``--quick``: BasicNet, Adam + L2,
BN vs psBN, 2 seeds unless ``--seeds``), then writes the results table, the
set-up and the figures.  In ``--out``, only the text between
``<!-- study:begin -->`` and ``<!-- study:end -->`` is replaced, so the prose
around it stays; a file without those markers is created or overwritten.
``--from-json`` rewrites table, figures and section from a previous
``--json`` output (its command and wall time included) without training.
"""
import argparse
import importlib.util
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

if importlib.util.find_spec('psbn_mmdet') is None:  # run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from psbn_mmdet import study  # noqa: E402

BEGIN, END = '<!-- study:begin -->', '<!-- study:end -->'


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='collapse_study',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='BasicNet, Adam + L2, BN vs psBN only')
    parser.add_argument('--seeds', type=int, default=None,
                        help='seeds per cell (default: 3, quick: 2)')
    parser.add_argument('--epochs', type=int, default=15)
    parser.add_argument('--processes', type=int, default=2,
                        help='worker processes, one thread each')
    parser.add_argument('--out', help='markdown file for the results')
    parser.add_argument('--json', help='every run, curves included')
    parser.add_argument('--figures', help='directory for the PNG plots')
    parser.add_argument('--from-json', dest='from_json',
                        help='render a previous --json output, train nothing')
    return parser.parse_args(argv)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f
                       if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return (f'{os.cpu_count()} cores ({cpu}), CPU only, Python '
            f'{platform.python_version()}, torch {torch.__version__}')


def results_section(args, rows, wall_seconds: float, figure_names,
                    out_path, run_machine: str, run_argv: list[str]) -> str:
    command = 'python tools/collapse_study.py ' + ' '.join(
        shlex.quote(a) for a in run_argv)
    lines = [
        BEGIN,
        f'- machine: {run_machine}',
        f'- command: `{command}`',
        f'- wall time: {wall_seconds / 60:.1f} min with {args.processes} '
        f'worker process(es) of one thread each',
        f'- runs: {sum(r["seeds"] for r in rows)}, '
        f'seeds per cell: {max(r["seeds"] for r in rows)}, '
        f'epochs: {args.epochs} (the last '
        f'{round(study.LR_DROP_FRACTION * args.epochs)} at lr / 10), '
        'batch 40',
        '',
        study.markdown_table(rows),
        '',
        study.setup_description(),
        '',
    ]
    if figure_names and args.figures:
        base = Path(out_path).parent if out_path else Path('.')
        for name in figure_names:
            path = os.path.relpath(Path(args.figures) / name, base)
            lines.append(f'![{name}]({path})')
        lines.append('')
    lines.append(END)
    return '\n'.join(lines)


def write_section(path: str, section: str) -> None:
    path = Path(path)
    text = path.read_text() if path.exists() else ''
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = '# Collapse study\n\n' + section + '\n'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv=None) -> int:
    args = parse_args(argv)
    run_argv = sys.argv[1:] if argv is None else list(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        results, wall = saved['runs'], saved['wall_seconds']
        run_machine, run_argv = saved['machine'], saved['argv']
        args.processes = saved.get('processes', args.processes)
        args.epochs = results[0]['job']['epochs']
    else:
        seeds = args.seeds or (2 if args.quick else 3)
        grid = study.quick_grid if args.quick else study.full_grid
        jobs = grid(seeds=seeds, epochs=args.epochs)
        started = time.perf_counter()
        results = study.run_jobs(jobs, processes=args.processes,
                                 log=lambda line: print(line, flush=True))
        wall = time.perf_counter() - started
        run_machine = machine()
    rows = study.aggregate(results)
    print(study.markdown_table(rows))
    print(f'wall time {wall / 60:.1f} min')
    figure_names = []
    if args.figures:
        os.makedirs(args.figures, exist_ok=True)
        for name, png in study.figures(results).items():
            Path(args.figures, name).write_bytes(png)
            figure_names.append(name)
    if args.json and not args.from_json:
        Path(args.json).write_text(json.dumps(
            dict(machine=run_machine, argv=run_argv, wall_seconds=wall,
                 processes=args.processes, cells=rows, runs=results),
            indent=1))
    if args.out:
        write_section(args.out, results_section(
            args, rows, wall, figure_names, args.out, run_machine, run_argv))
    return 0


if __name__ == '__main__':
    sys.exit(main())
