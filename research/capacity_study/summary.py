"""Tables of the capacity study's run records (``--json`` outputs).

* :func:`cell_table`: mean ± sd over seeds of test accuracy, dead %, seconds
  per cell (task, network, regime, norm, width, epochs);
* :func:`effective_width_table`: for each collapse-regime BN cell, the
  control's accuracy at the same width and at the effective width
  (1 − dead fraction) × width, interpolated linearly in log2 width between
  the control widths measured;
* :func:`paired_table`: paired-seed differences between norms of one cell,
  mean and 95% t interval;
* :func:`contribution_table`: the :mod:`.contribution` probe's accuracy
  drops.
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict

from research.stats import interval


def _job_key(job: dict, *drop: str) -> tuple:
    keys = ('dataset', 'network', 'regime', 'variant', 'width', 'epochs',
            'pretrain')
    return tuple(job.get(k) for k in keys if k not in drop)


def _mean_sd(values: list[float], digits: int = 1) -> str:
    if not values:
        return '–'
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f'{mean:.{digits}f} ± {sd:.{digits}f}'


def unique(runs: list[dict]) -> list[dict]:
    """The first run of each job: a rerun of the same job (a pilot's BN
    seeds) is counted once (on one CPU thread reruns are bit-identical)."""
    seen, kept = set(), []
    for run in runs:
        # records from before Job.pretrain existed trained from scratch
        key = tuple(sorted({'pretrain': None, **run['job']}.items()))
        if key not in seen:
            seen.add(key)
            kept.append(run)
    return kept


def cells(runs: list[dict]) -> dict[tuple, list[dict]]:
    grouped = defaultdict(list)
    for run in unique(runs):
        grouped[_job_key(run['job'])].append(run)
    return dict(sorted(grouped.items(), key=lambda kv: tuple(
        str(v) if not isinstance(v, float) else f'{v:08.3f}'
        for v in kv[0])))


def cell_table(runs: list[dict]) -> str:
    lines = ['| task | network | regime | norm | width | epochs | pretrain '
             '| seeds | test acc. % | dead % (eval, train set) | train loss '
             '(last epoch) | s per run |', '|' + '---|' * 12]
    for key, group in cells(runs).items():
        lines.append('| ' + ' | '.join(str(k) for k in key) + f' | '
                     f'{len(group)} | '
                     f'{_mean_sd([r["test_acc"] for r in group])} | '
                     f'{_mean_sd([r["dead_pct"] for r in group])} | '
                     f'{_mean_sd([r["loss_curve"][-1][1] for r in group], 3)}'
                     f' | {statistics.fmean(r["seconds"] for r in group):.0f}'
                     ' |')
    return '\n'.join(lines)


def _interpolate(curve: list[tuple[float, float]], width: float):
    """Linear in log2 width between the measured points; None outside."""
    for (w0, a0), (w1, a1) in zip(curve, curve[1:]):
        if w0 <= width <= w1:
            t = (math.log2(width) - math.log2(w0)) / (math.log2(w1)
                                                      - math.log2(w0))
            return a0 + t * (a1 - a0)
    return None


def effective_width_table(runs: list[dict], control: str = 'sgd') -> str:
    by_cell = cells(runs)
    lines = ['| task | network | regime | width | epochs | BN acc. % | '
             'dead % | control acc. % (same width) | effective width | '
             'control acc. % at effective width (interpolated) |',
             '|' + '---|' * 10]
    for (dataset, network, regime, variant, width, epochs, pretrain), group \
            in by_cell.items():
        if variant != 'bn' or regime == control or pretrain is not None:
            continue
        curve = sorted(
            (key[4], statistics.fmean(r['test_acc'] for r in g))
            for key, g in by_cell.items()
            if key[:4] == (dataset, network, control, 'bn')
            and key[5] == epochs and key[6] is None)
        same = dict(curve).get(width)
        dead = statistics.fmean(r['dead_pct'] for r in group)
        effective = width * (1 - dead / 100)
        at_effective = _interpolate(curve, effective)
        lines.append(
            f'| {dataset} | {network} | {regime} | {width} | {epochs} | '
            f'{_mean_sd([r["test_acc"] for r in group])} | {dead:.1f} | '
            f'{"–" if same is None else f"{same:.1f}"} | {effective:.2f} | '
            f'{"–" if at_effective is None else f"{at_effective:.1f}"} |')
    return '\n'.join(lines)


def paired_table(runs: list[dict], pairs=(('rho50_w10', 'bn'),
                                          ('redo_20', 'bn'),
                                          ('rho50_w10', 'redo_20'))) -> str:
    """Paired-seed differences of test accuracy and dead %, per cell."""
    by_cell = defaultdict(dict)
    for run in unique(runs):
        job = run['job']
        by_cell[_job_key(job, 'variant')].setdefault(
            job['variant'], {})[job['seed']] = run
    lines = ['| task | network | regime | width | epochs | pretrain | '
             'difference | seeds | test acc. (points), mean [95% t interval] '
             '| dead % (points) |', '|' + '---|' * 10]
    for key, variants in sorted(by_cell.items(), key=lambda kv: str(kv[0])):
        for a, b in pairs:
            if a not in variants or b not in variants:
                continue
            seeds = sorted(set(variants[a]) & set(variants[b]))
            if not seeds:
                continue
            acc = [variants[a][s]['test_acc'] - variants[b][s]['test_acc']
                   for s in seeds]
            dead = [variants[a][s]['dead_pct'] - variants[b][s]['dead_pct']
                    for s in seeds]
            lines.append('| ' + ' | '.join(str(k) for k in key) +
                         f' | {a} − {b} | {len(seeds)} | {interval(acc, 2)} | '
                         f'{interval(dead, 2)} |')
    return '\n'.join(lines)


def _ratio(value) -> str:
    return '–' if value is None else f'{value:.3g}'


def contribution_table(runs: list[dict]) -> str:
    lines = ['| task | network | regime | norm | width | seed | revived '
             'alive / channels | test acc. % | drop, revived zeroed | drop, '
             'as many random live zeroed (mean of draws) | median max. '
             'output, revived / live never shifted |',
             '|' + '---|' * 11]
    for run in unique(runs):
        probe = next((p for p in run.get('probes', [])
                      if p.get('kind') == 'contribution'), None)
        if probe is None:
            continue
        job = run['job']
        lines.append(
            f'| {job["dataset"]} | {job["network"]} | {job["regime"]} | '
            f'{job["variant"]} | {job["width"]} | {job["seed"]} | '
            f'{probe["revived_alive"]} / {probe["channels"]} | '
            f'{probe["test_acc"]:.2f} | {probe["drop_revived"]:+.2f} | '
            f'{probe["drop_random"]:+.2f} | '
            f'{_ratio(probe.get("median_max_revived"))} / '
            f'{_ratio(probe.get("median_max_live_never_shifted"))} |')
    return '\n'.join(lines)


def _probe(run: dict, kind: str):
    return next((p for p in run.get('probes', []) if p.get('kind') == kind),
                None)


def intervention_table(runs: list[dict]) -> str:
    """Per cell of a run that changes the model (psBN, a revival rule,
    ReDo): shifts, the loss change at a shift (the training batch's loss
    after the step's intervention against before, %, mean over the
    interventions of a run, then over runs; the largest run mean) and, for
    a revival rule, the :func:`research.collapse_study.revival.shift_bound`
    (largest over the shifts of a run, median over runs)."""
    lines = ['| task | network | regime | norm | width | epochs | pretrain | '
             'seeds | shifts per run | loss change at a shift, % (mean; '
             'largest run mean) | shift bound on the next layer\'s input '
             '(largest per run, median over runs) |', '|' + '---|' * 11]
    for key, group in cells(runs).items():
        changes = [r['intervention_loss_pct'] for r in group
                   if r.get('intervention_loss_pct') is not None]
        if not changes:
            continue
        bounds = [p['max_shift_bound'] for p in
                  (_probe(r, 'revival') for r in group)
                  if p and p.get('max_shift_bound') is not None]
        lines.append(
            '| ' + ' | '.join(str(k) for k in key) + f' | {len(group)} | '
            f'{statistics.fmean(r["shifts"] for r in group):.0f} | '
            f'{statistics.fmean(changes):+.3f}; {max(changes, key=abs):+.3f}'
            f' | {statistics.median(bounds):.3g} |' if bounds else
            '| ' + ' | '.join(str(k) for k in key) + f' | {len(group)} | '
            f'{statistics.fmean(r["shifts"] for r in group):.0f} | '
            f'{statistics.fmean(changes):+.3f}; {max(changes, key=abs):+.3f}'
            ' | – |')
    return '\n'.join(lines)
