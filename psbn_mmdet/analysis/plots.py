"""PNG plots of collapse reports (:mod:`psbn_mmdet.analysis.report`).

* ``<stage>.png``: the stage's γ-β scatter, collapsed channels (|γ| below
  the threshold) as red crosses and, when activations were measured, dead
  channels circled; next to it the |γ| histogram on a log axis with the
  threshold drawn.  With two reports, one row per checkpoint on shared axes.
* ``summary.png``: collapsed (and dead) percentages per stage, the two
  checkpoints side by side with their differences in channels.

The reports are named by their labels (default ``a`` and ``b``; the demo
passes the runs' names, such as ``BN`` and ``psBN``).

Figures are drawn on matplotlib's Agg canvas without pyplot: no display and no
global state are involved, and the PNGs are returned as bytes so the caller
writes them only once everything else has succeeded.
"""
from __future__ import annotations

import io

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

HEALTHY, COLLAPSED, DEAD = 'tab:blue', 'tab:red', 'tab:orange'
SHOWN_BELOW = 1e-3  # |γ| under threshold * SHOWN_BELOW shares the first bin


def png_bytes(figure: Figure) -> bytes:
    """A figure rendered to PNG bytes on matplotlib's Agg canvas."""
    FigureCanvasAgg(figure)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format='png', dpi=100)
    return buffer.getvalue()


def _stage_channels(report, stage: str) -> tuple[np.ndarray, ...]:
    """γ, β, collapsed, dead (False where unmeasured) of a stage's channels."""
    layers = [layer for layer in report.layers if layer.stage == stage]
    if not layers:  # a stage only the other checkpoint of a comparison has
        return np.zeros(0), np.zeros(0), np.zeros(0, bool), np.zeros(0, bool)
    columns = ([layer.gamma for layer in layers],
               [layer.beta for layer in layers],
               [layer.collapsed for layer in layers],
               [torch.zeros(layer.channels, dtype=torch.bool)
                if layer.dead is None else layer.dead for layer in layers])
    return tuple(torch.cat(column).numpy() for column in columns)


def _say(ax, text: str) -> None:
    """Words in a panel that would otherwise be empty."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha='center',
            va='center', color='grey', wrap=True)


def _scatter(ax, report, stage: str, label: str) -> None:
    gamma, beta, collapsed, dead = _stage_channels(report, stage)
    if gamma.size == 0:
        _say(ax, f'no BN layer in {stage} in this checkpoint')
        ax.set(title=f'{label}{stage}')
        return
    finite = np.isfinite(gamma) & np.isfinite(beta)
    gamma, beta = gamma[finite], beta[finite]
    collapsed, dead = collapsed[finite], dead[finite]
    ax.scatter(gamma[~collapsed], beta[~collapsed], s=4, alpha=0.5,
               color=HEALTHY, label='healthy')
    ax.scatter(gamma[collapsed], beta[collapsed], s=16, marker='x',
               color=COLLAPSED, label=f'|γ| < {report.gamma_threshold:g} '
                                     f'({int(collapsed.sum())})')
    if report.num_images is not None:
        ax.scatter(gamma[dead], beta[dead], s=40, facecolors='none',
                   edgecolors=DEAD,
                   label=f'dead on {report.num_images} images '
                         f'({int(dead.sum())})')
    ax.axvline(0, color='grey', lw=0.5)
    nonfinite = '' if finite.all() else \
        f', {int((~finite).sum())} non-finite (not drawn)'
    ax.set(xlabel='γ', ylabel='β',
           title=f'{label}{stage}: {int(collapsed.sum())}/{finite.size} '
                 f'collapsed{nonfinite}')
    ax.legend(loc='upper left', fontsize='small')


def _histogram(ax, report, stage: str, label: str) -> None:
    gamma = np.abs(_stage_channels(report, stage)[0]).astype(np.float64)
    gamma = gamma[np.isfinite(gamma)]
    threshold = report.gamma_threshold
    floor = threshold * SHOWN_BELOW
    top = max(gamma.max(initial=0.0), threshold * 10)
    bins = np.logspace(np.log10(floor), np.log10(top), 60)
    bins[0] = floor  # exactly: values drawn at the floor stay inside
    ax.hist(np.maximum(gamma, floor), bins=bins, log=True, color=HEALTHY)
    ax.axvline(threshold, color=COLLAPSED, ls='--',
               label=f'threshold {threshold:g}')
    ax.set_xscale('log')
    ax.set(xlabel=f'|γ| (below {floor:g} drawn at {floor:g})',
           ylabel='channels', title=f'{label}{stage}: |γ|')
    if gamma.size == 0:
        _say(ax, f'no finite γ in {stage}')
    ax.legend(loc='upper left', fontsize='small')


def _stage_figure(reports, labels, stage: str) -> bytes:
    figure = Figure(figsize=(11, 4 * len(reports)))
    axes = figure.subplots(len(reports), 2, squeeze=False, sharex='col',
                           sharey='col')
    for row, report, label in zip(axes, reports, labels):
        _scatter(row[0], report, stage, label)
        _histogram(row[1], report, stage, label)
    return png_bytes(figure)


def _summary_figure(reports, labels, stages) -> bytes:
    measured = ['collapsed_gamma']
    if all(report.num_images is not None for report in reports):
        measured.append('dead_activation')
    if any(report.total_row()['nonfinite'] for report in reports):
        measured.append('nonfinite')
    figure = Figure(figsize=(max(6, 1.6 * len(stages)), 3.5 * len(measured)))
    axes = figure.subplots(len(measured), 1, squeeze=False)[:, 0]
    tables = [{row['name']: row for row in r.stage_rows() + [r.total_row()]}
              for r in reports]
    names = [*stages, 'total']
    x = np.arange(len(names))
    width = 0.8 / len(reports)
    for ax, key in zip(axes, measured):
        pcts = [[(table[n][f'{key}_pct'] or 0.0) if n in table else 0.0
                 for n in names] for table in tables]
        for i, (heights, label) in enumerate(zip(pcts, labels)):
            ax.bar(x + (i - (len(reports) - 1) / 2) * width, heights, width,
                   label=label.rstrip(': ') or None)
        if len(reports) == 2:
            for xi, name, top in zip(x, names, np.max(pcts, axis=0)):
                a, b = (table.get(name, {}).get(key) or 0 for table in tables)
                ax.annotate(f'{b - a:+d}', (xi, top), xytext=(0, 2),
                            textcoords='offset points', ha='center',
                            fontsize='small')
            ax.legend(fontsize='small')
        what = {'collapsed_gamma': '|γ| < threshold',
                'dead_activation': 'dead (of pre-ReLU channels)',
                'nonfinite': 'NaN or Inf γ, β or activation'}[key]
        if not np.any(pcts):
            _say(ax, f'0 channels {what} in every stage')
        difference = (f' (numbers: {labels[1].rstrip(": ")} − '
                      f'{labels[0].rstrip(": ")})' if len(reports) == 2
                      else '')
        ax.set(xticks=x, xticklabels=names, ylabel='% of channels',
               title=what + difference)
    return png_bytes(figure)


def plot_reports(reports: list, labels: list[str] | None = None
                 ) -> dict[str, bytes]:
    """``{file name: PNG bytes}``: one figure per stage and a summary, of one
    report or two side by side (``labels``, default ``a`` and ``b``)."""
    if labels is None:
        labels = ['a', 'b'] if len(reports) == 2 else ['']
    labels = [f'{label}: ' if label else '' for label in labels]
    stages = list(dict.fromkeys(s for r in reports for s in r.stages()))
    pngs = {f'{stage}.png': _stage_figure(reports, labels, stage)
            for stage in stages}
    pngs['summary.png'] = _summary_figure(reports, labels, stages)
    return pngs
