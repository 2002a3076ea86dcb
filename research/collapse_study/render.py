"""The study's results: mean ± std over seeds per cell, the markdown table,
the set-up tables and the figures, all rendered from run records."""
from __future__ import annotations

import io
import math
import statistics

import numpy as np

from .grid import COLLAPSE_VARIANTS, NETWORKS
from .training import REGIMES
from .variants import VARIANTS

METRICS = ('dead_pct', 'dead_train_pct', 'last_window_dead_pct',
           'small_gamma_pct', 'test_acc', 'final_loss', 'head_dead_pct',
           'shifts', 'active_after_shift_pct', 'recollapses',
           'alive_next_window_pct', 'intervention_loss_pct')


def alive_next_window(result: dict) -> float | None:
    """% of shifts (ReDo: recyclings) whose channel was not dead again at
    the next window's end (None for records without the counter)."""
    again = result.get('recollapses_next_window')
    if again is None or not result.get('shifts'):
        return None
    return 100.0 * (1 - again / result['shifts'])


def last_window_dead(result: dict) -> float | None:
    """Dead % the controller found in the last detection window, before the
    shift at its end (a shift at the very last step would hide those channels
    from the end-of-training measurements)."""
    curve = result['window_curve']
    return curve[-1][1] if curve else None


def _mean_std(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(results: list[dict]) -> list[dict]:
    """Mean and std over seeds per cell; cells ordered by network, regime and
    variant as declared above."""
    cells: dict[tuple, list[dict]] = {}
    for result in results:
        job = result['job']
        key = (job['network'], job['regime'], job['variant'])
        cells.setdefault(key, []).append(result)
    order = (list(NETWORKS), list(REGIMES), list(VARIANTS))
    rows = []
    for network, regime, variant in sorted(cells, key=lambda key: tuple(
            names.index(name) for names, name in zip(order, key))):
        runs = cells[(network, regime, variant)]
        row = dict(network=network, regime=regime, variant=variant,
                   seeds=len(runs))
        for run in runs:
            run.setdefault('last_window_dead_pct', last_window_dead(run))
            run.setdefault('final_loss', run['loss_curve'][-1][1]
                           if run.get('loss_curve') else None)
            run.setdefault('alive_next_window_pct', alive_next_window(run))
        for metric in METRICS:  # records of older code lack some metrics
            row[metric] = _mean_std([r[metric] for r in runs
                                     if r.get(metric) is not None])
        row['last_window_step'] = max(
            (r['window_curve'][-1][0] for r in runs if r['window_curve']),
            default=None)
        # steps to re-collapse pooled over seeds: Σ steps / Σ re-collapses
        recollapses = sum(r['recollapses'] for r in runs)
        row['steps_to_recollapse'] = (sum(
            r['steps_to_recollapse'] * r['recollapses'] for r in runs
            if r['recollapses']) / recollapses if recollapses else None)
        rows.append(row)
    return rows


# -------------------------------------------------------------- reports
def _fmt(pair: tuple[float, float] | None, digits: int = 1) -> str:
    if pair is None:
        return '–'
    mean, std = pair
    return f'{mean:.{digits}f} ± {std:.{digits}f}'


TABLE_HEADER = ('| network | regime | norm | dead % (end) '
                '| dead % (last window, step) | \\|γ\\| < 1e-3 % '
                '| test acc. % | train loss (last epoch) | FC head dead % '
                '| shifts | active after shift % '
                '| re-collapses | steps to re-collapse '
                '| alive one window after a shift % '
                '| loss change at a shift % |\n'
                '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')


def markdown_table(rows: list[dict]) -> str:
    lines = [TABLE_HEADER]
    for row in rows:
        steps = row['steps_to_recollapse']
        lines.append(
            f"| {row['network']} | {REGIMES[row['regime']].label} "
            f"| {VARIANTS[row['variant']].label} "
            f"| {_fmt(row['dead_pct'])} "
            f"| {_fmt(row['last_window_dead_pct'])} "
            f"({row['last_window_step']}) "
            f"| {_fmt(row['small_gamma_pct'])} | {_fmt(row['test_acc'])} "
            f"| {_fmt(row['final_loss'], 2)} | {_fmt(row['head_dead_pct'])} "
            f"| {_fmt(row['shifts'], 0)} "
            f"| {_fmt(row['active_after_shift_pct'], 2)} "
            f"| {_fmt(row['recollapses'], 0)} "
            f"| {'–' if steps is None else f'{steps:.0f}'} "
            f"| {_fmt(row['alive_next_window_pct'])} "
            f"| {_fmt(row['intervention_loss_pct'], 2)} |")
    return '\n'.join(lines)


def setup_description(present=None) -> str:
    """The fixed set-up of every run, from the constants above; the psBN
    rows for the variants in ``present`` (all when None)."""
    lines = ['| regime | optimizer | lr | weight decay | momentum |',
             '|---|---|---|---|---|']
    for regime in REGIMES.values():
        decay = ('L2 (in the gradient)' if regime.optimizer == 'adam' else
                 'decoupled' if regime.optimizer == 'adamw' else 'L2')
        lines.append(f'| {regime.label} | {regime.optimizer} | {regime.lr:g} '
                     f'| {regime.weight_decay:g} {decay} '
                     f'| {regime.momentum:g} |')
    lines += ['', '| norm | psBN options | optimizer_reset | x̂ statistics |',
              '|---|---|---|---|']
    for name, variant in VARIANTS.items():
        if not variant.psbn or (present is not None
                                and name not in present):
            continue
        options = ', '.join(f'{k}={v}' for k, v in variant.options.items())
        lines.append(
            f'| {variant.label} | {options or "defaults"} '
            f'| {variant.optimizer_reset or "default"} '
            f'| {variant.xhat} |')
    return '\n'.join(lines)


def plot_curves(results: list[dict], network: str, regimes, variants,
                title: str) -> bytes:
    """PNG, one column per regime: dead % over training in eval mode over the
    training set (mean ± std over seeds), and in the controller's train-mode
    detection windows (mean over seeds)."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    regimes = list(regimes)
    palette = colormaps['tab10' if len(variants) <= 10 else 'tab20'].colors
    columns = 3 if len(variants) <= 6 else 2
    legend_rows = math.ceil(len(variants) / columns)
    figure = Figure(figsize=(max(4.2 * len(regimes), 11.0),
                             6.4 + 0.25 * legend_rows))
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, len(regimes), squeeze=False)
    for column, regime in enumerate(regimes):
        top, bottom = axes[0][column], axes[1][column]
        for index, variant in enumerate(variants):
            runs = [r for r in results if r['job']['network'] == network
                    and r['job']['regime'] == regime
                    and r['job']['variant'] == variant]
            if not runs:
                continue
            label = VARIANTS[variant].label
            curves = np.array([r['dead_curve'] for r in runs])
            epochs = curves[0, :, 0]
            mean, std = curves[:, :, 1].mean(0), curves[:, :, 1].std(0)
            line, = top.plot(epochs, mean, label=label,
                             color=palette[index % len(palette)])
            top.fill_between(epochs, mean - std, mean + std, alpha=0.2,
                             color=line.get_color())
            windows = [np.array(r['window_curve']) for r in runs
                       if r['window_curve']]
            if windows and all(len(w) == len(windows[0]) for w in windows):
                steps = windows[0][:, 0]
                values = np.stack([w[:, 1] for w in windows])
                bottom.plot(steps, values.mean(0), marker='.',
                            color=line.get_color(), label=label)
        top.set_title(f'{network}, {REGIMES[regime].label}')
        top.set_xlabel('epoch')
        top.set_ylabel('dead % (eval mode, training set)')
        bottom.set_xlabel('step')
        bottom.set_ylabel('dead % in detection window (train mode)')
        top.grid(alpha=0.3)
        bottom.grid(alpha=0.3)
    legend = {}
    for axis in axes[0]:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    figure.legend(legend.values(), legend.keys(), loc='lower center',
                  ncol=columns, fontsize=8)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.035 * legend_rows, 1, 1))
    buffer = io.BytesIO()
    figure.savefig(buffer, format='png', dpi=90)
    return buffer.getvalue()


#: the first study's recovery candidates (BasicNet), each one change from
#: 'fix'; their records are docs/collapse_study_runs/full_grid.json
FIRST_STUDY_CANDIDATES = {
    'adam_l2': ('fix_window_mean', 'fix_reset_zero', 'fix_floor_abs',
                'fix_window_20', 'fix_window_300', 'fix_rho_05', 'fix_rho_16'),
    'sgd_high': ('fix_floor_abs', 'fix_window_20'),
}


def figures(results: list[dict]) -> dict[str, bytes]:
    """``{file name: PNG}`` for the runs present in ``results``."""
    present = {(r['job']['network'], r['job']['regime']) for r in results}
    pngs = {}
    for network in NETWORKS:
        regimes = [r for r in REGIMES if (network, r) in present]
        if regimes:
            pngs[f'dead_{network}.png'] = plot_curves(
                results, network, regimes, COLLAPSE_VARIANTS,
                f'{network}: dead pre-ReLU channels over training, BN vs '
                'psBN (mean ± std over seeds)')
    for regime, candidates in FIRST_STUDY_CANDIDATES.items():
        variants = (('bn', 'shipped', 'psbn', 'fix') + candidates
                    + ('fix_w20_none', 'fix_w20_none_rho16'))
        if any(r['job']['network'] == 'basicnet'
               and r['job']['regime'] == regime
               and r['job']['variant'] in candidates for r in results):
            pngs[f'candidates_basicnet_{regime}.png'] = plot_curves(
                results, 'basicnet', [regime], variants,
                f'basicnet, {REGIMES[regime].label}: recovery candidates')
    return pngs
