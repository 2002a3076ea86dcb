"""Read the hooks' per-stage scalars back from mmengine's ``scalars.json`` logs.

``LocalVisBackend`` writes one JSON object per logged iteration to
``<work_dir>/<timestamp>/vis_data/scalars.json``; the psBN hooks' keys are
``psbn/<kind>_<stage>``.  :func:`stage_series` turns them into per-stage series,
:func:`markdown_table` and :func:`plot_runs` compare runs (BN vs psBN).
"""
from __future__ import annotations

import glob
import json
import os.path as osp

from .roles import STAGES

KINDS = ('dead', 'collapsed_gamma', 'recovered')


def find_scalars(work_dir: str) -> str:
    """The newest ``scalars.json`` under an mmengine work dir."""
    found = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                      'scalars.json')))
    if not found:
        raise FileNotFoundError(f'no vis_data/scalars.json under {work_dir}')
    return found[-1]


def stage_series(scalars_json: str, kind: str = 'dead'
                 ) -> dict[str, list[tuple[int, float]]]:
    """``{stage: [(iteration, value), ...]}`` for one kind of psBN scalar."""
    series: dict[str, list[tuple[int, float]]] = {s: [] for s in STAGES}
    with open(scalars_json) as f:
        for line in f:
            record = json.loads(line)
            for stage in STAGES:
                key = f'psbn/{kind}_{stage}'
                if key in record:
                    series[stage].append((record['step'], record[key]))
    return series


def markdown_table(runs: dict[str, str], kind: str = 'dead',
                   every: int = 10) -> str:
    """Rows: iterations (every ``every``); columns: run × stage."""
    data = {name: stage_series(path, kind) for name, path in runs.items()}
    steps = sorted({step for series in data.values()
                    for points in series.values() for step, _ in points
                    if step % every == 0})
    header = ['iter'] + [f'{name} {stage}' for name in runs for stage in STAGES]
    rows = ['| ' + ' | '.join(header) + ' |',
            '|' + '---|' * len(header)]
    for step in steps:
        cells = [str(step)]
        for name in runs:
            for stage in STAGES:
                values = dict(data[name][stage])
                cells.append(f'{values[step]:g}' if step in values else '')
        rows.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(rows)


def plot_runs(runs: dict[str, str], out_png: str, kind: str = 'dead') -> None:
    """One panel per stage, one line per run."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(STAGES), figsize=(3 * len(STAGES), 2.8),
                             sharex=True)
    for name, path in runs.items():
        for ax, (stage, points) in zip(axes,
                                       stage_series(path, kind).items()):
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, label=name)
            ax.set_title(stage)
            ax.set_xlabel('iteration')
    axes[0].set_ylabel(f'{kind.replace("_", " ")} channels')
    axes[-1].legend(fontsize='small')
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
