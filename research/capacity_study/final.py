"""Issue 23's final tables: per declared cell, each method's accuracy, dead
%, training loss, shifts and loss change at a shift, and the paired-seed
differences the issue asks for (mean and 95% t interval).

    python -m research.capacity_study.final docs/capacity_runs/final_*.json \
        --out docs/capacity_study.md
"""
from __future__ import annotations

import statistics
import sys

from research.markdown import render_records_main

from research.stats import interval

from .summary import unique

#: the methods of the final runs, in table order, and their names there
METHODS = {'bn': 'BN', 'ps_keep': 'psBN', 'ps_rescale_gamma': 'rule (b)',
           'redo_20': 'ReDo'}
PAIRS = (('ps_keep', 'bn'), ('ps_rescale_gamma', 'bn'), ('redo_20', 'bn'),
         ('ps_keep', 'redo_20'), ('ps_rescale_gamma', 'redo_20'),
         ('ps_rescale_gamma', 'ps_keep'))


def _cell_label(job: dict) -> str:
    start = f', after {job["pretrain"]}' if job.get('pretrain') else ''
    return f'{job["regime"]}{start}, w{job["width"]:g}'


def _mean_sd(values: list[float], digits: int = 2) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f'{statistics.fmean(values):.{digits}f} ± {sd:.{digits}f}'


def tables(runs: list[dict]) -> tuple[str, str]:
    by_cell: dict[str, dict[str, dict[int, dict]]] = {}
    for run in unique(runs):
        job = run['job']
        if job['variant'] in METHODS:
            by_cell.setdefault(_cell_label(job), {}).setdefault(
                job['variant'], {})[job['seed']] = run
    methods = ['| cell | method | seeds | test acc. % | dead % | train loss '
               '(last epoch) | shifts per run | loss change at a shift, % |',
               '|' + '---|' * 8]
    paired = ['| cell | difference | seeds | test acc. (points), mean [95% '
              't interval] | dead % (points) |', '|' + '---|' * 5]
    for label, by in by_cell.items():
        for variant, name in METHODS.items():
            group = list(by.get(variant, {}).values())
            if not group:
                continue
            change = [r['intervention_loss_pct'] for r in group
                      if r.get('intervention_loss_pct') is not None]
            shifts = (statistics.fmean(r['shifts'] for r in group)
                      if variant != 'bn' else 0)
            methods.append(
                f'| {label} | {name} | {len(group)} | '
                f'{_mean_sd([r["test_acc"] for r in group])} | '
                f'{statistics.fmean(r["dead_pct"] for r in group):.1f} | '
                f'{statistics.fmean(r["loss_curve"][-1][1] for r in group):.3f}'
                f' | {shifts:.0f} | '
                f'{f"{statistics.fmean(change):+.3f}" if change else "–"} |')
        for a, b in PAIRS:
            seeds = sorted(set(by.get(a, {})) & set(by.get(b, {})))
            if len(seeds) < 2:
                continue
            acc = [by[a][s]['test_acc'] - by[b][s]['test_acc'] for s in seeds]
            dead = [by[a][s]['dead_pct'] - by[b][s]['dead_pct']
                    for s in seeds]
            paired.append(f'| {label} | {METHODS[a]} − {METHODS[b]} | '
                          f'{len(seeds)} | {interval(acc, 2)} | '
                          f'{interval(dead, 2)} |')
    return '\n'.join(methods), '\n'.join(paired)


def main(argv=None) -> int:
    return render_records_main(
        argv, 'python -m research.capacity_study.final',
        __doc__.splitlines()[0], 'capacity_final',
        'Capacity study: final cells', lambda runs: '\n\n'.join(tables(runs)))


if __name__ == '__main__':
    sys.exit(main())
