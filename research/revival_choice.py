"""Issue 38's declared choice of psBN's default revival, across all cells.

    python -m research.revival_choice docs/capacity_runs/check38_*.json \
        [--detection docs/transfer_runs/d38_*.json] \
        [--out docs/revival_default.md]

A cell is a set of paired runs (seeds) of BN, psBN's rules and ReDo, in the
cell's own unit: test accuracy in points (classification,
``research.capacity_study`` records, cells of
:data:`research.capacity_study.inherited.CELLS`) or bbox mAP (detection,
``research.detection_study`` records of either family).  In every cell, for every psBN rule
(docs/revival_default.md, declared before the runs):

* (a) rule − BN: lower end of the 95% t interval ≥ the cell's floor
  (−0.25 points, −0.002 mAP);
* (b) rule − best: upper end ≥ 0, "best" the psBN rule or ReDo with the
  largest mean paired difference − BN in that cell.

The default is the rule that meets both everywhere; else the one failing
fewest conditions, then the smallest worst shortfall in that cell's own
interval half-widths; ties keep the current default (then the largest
smallest margin).  No mean across cells enters.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass, field

from research.markdown import write_generated
from research.records import read_records
from research.stats import interval, t_interval

from psbn_mmdet.core import DEFAULT_REVIVAL

from .capacity_study.inherited import by_cell

#: psBN's rules compared (the product's ``revival`` values)
RULES = ('shift', 'reinit', 'reinit_init', 'auto')
#: research label -> rule / method, per study
CLASSIFICATION = {'bn': 'BN', 'ps_keep': 'shift', 'ps_reinit': 'reinit',
                  'ps_reinit_init': 'reinit_init', 'ps_auto': 'auto',
                  'redo_20': 'ReDo'}
DETECTION = {'BN': 'BN', 'psBN revival=shift': 'shift',
             'psBN revival=reinit': 'reinit',
             'psBN revival=reinit_init': 'reinit_init',
             'psBN revival=auto': 'auto', 'ReDo': 'ReDo',
             # the transfer cells' names (research.detection_study.transfer
             # REVIVALS); 'healthy': the healthy start's BN runs of a
             # collapsed-start cell (what collapse costs), either family
             'psBN_shift': 'shift', 'psBN_reinit_init': 'reinit_init',
             'psBN_auto': 'auto', 'healthy checkpoint, BN': 'healthy'}
#: the declared detection cells (docs/revival_default.md): (task, start,
#: regime) -> name
NAMED = {('solid5', 'healthy', 'recipe'): 'D0',
         ('solid5', 'collapsed', 'recipe'): 'D1',
         ('solid5', 'healthy', 'adam_l2'): 'D2'}
#: condition (a)'s floor per unit
FLOORS = {'points': -0.25, 'mAP': -0.002}


@dataclass
class Cell:
    name: str
    unit: str  # a key of FLOORS
    #: method ('BN', a rule, 'ReDo') -> seed -> value
    values: dict[str, dict[int, float]] = field(default_factory=dict)

    def diffs(self, a: str, b: str) -> list[float]:
        seeds = sorted(set(self.values.get(a, {}))
                       & set(self.values.get(b, {})))
        return [self.values[a][s] - self.values[b][s] for s in seeds]

    def best(self) -> str | None:
        """The psBN rule or ReDo with the largest mean − BN."""
        means = {m: statistics.fmean(d) for m in (*RULES, 'ReDo')
                 if len(d := self.diffs(m, 'BN')) >= 2}
        return max(means, key=means.get) if means else None


def _cells(groups: dict, unit: str, labels: dict[str, str],
           value: str) -> list[Cell]:
    """Cells from ``name -> study label -> seed -> run`` groups."""
    cells = []
    for name, methods in groups.items():
        cell = Cell(str(name), unit, {
            labels[label]: {s: run[value] for s, run in seeds.items()}
            for label, seeds in methods.items() if label in labels})
        if cell.values:
            cells.append(cell)
    return cells


def classification_cells(runs: list[dict]) -> list[Cell]:
    return _cells(by_cell(runs), 'points', CLASSIFICATION, 'test_acc')


def detection_cells(runs: list[dict]) -> list[Cell]:
    """One cell per (detector, start and regime) of the demo family's
    records and per (task, width, start, regime) of the transfer family's;
    a collapsed-start cell holds the healthy start's BN runs as
    'healthy'."""
    from research.detection_study import demo, transfer
    demo_runs = [r for r in runs if 'width' not in r['job']]
    groups = {f'{d} {r}': norms for (d, r), norms in
              demo.by_seed(demo_runs).items()}
    cells = transfer.by_seed([r for r in runs if 'width' in r['job']])
    for key in cells:
        width, regime, iterations, task, start = key
        norms = transfer.with_healthy_control(cells, key)
        name = NAMED.get((task, start, regime), f'{task} {width:g}x '
                         f'{start or "pretrained"} {regime}')
        groups[name if iterations is None else f'{name} {iterations} it'] = \
            norms
    return _cells(groups, 'mAP', DETECTION, 'bbox_mAP')


def conditions(cells: list[Cell]) -> dict[str, list[tuple]]:
    """Per rule: ``(cell, text, met, margin in half-widths)``; the margin
    is negative by the shortfall where a condition fails."""
    out: dict[str, list[tuple]] = {rule: [] for rule in RULES}
    for cell in cells:
        best, floor = cell.best(), FLOORS[cell.unit]
        for rule in RULES:
            diffs = cell.diffs(rule, 'BN')
            if len(diffs) < 2:
                continue
            mean, low, high = t_interval(diffs)
            half = (high - low) / 2 or 1e-12
            out[rule].append((cell.name, f'− BN lower end {low:+.3f} ≥ '
                              f'{floor:+.3f}', low >= floor,
                              (low - floor) / half))
            if best is None or best == rule:
                out[rule].append((cell.name, f'best rule ({best or "–"}) '
                                  'itself', True, float('inf')))
                continue
            vs = cell.diffs(rule, best)
            if len(vs) < 2:
                continue
            _, vs_low, vs_high = t_interval(vs)
            vs_half = (vs_high - vs_low) / 2 or 1e-12
            out[rule].append((cell.name, f'− {best} (best) upper end '
                              f'{vs_high:+.3f} ≥ 0', vs_high >= 0,
                              vs_high / vs_half))
    return out


def choose(cells: list[Cell]) -> tuple[str, dict[str, tuple[int, float]]]:
    """The declared rule: fewest failed conditions, then the smallest
    worst shortfall (half-widths); ties keep the current default, else go
    to the largest smallest margin.  Rules with no cell are no candidates.
    Returns the rule and, per rule, (failed, worst shortfall)."""
    met = conditions(cells)
    score = {rule: (sum(not ok for *_, ok, _ in rows),
                    max((max(0.0, -m) for *_, m in rows), default=0.0))
             for rule, rows in met.items() if rows}
    smallest = {rule: min(m for *_, m in met[rule]) for rule in score}
    return min(score, key=lambda rule: (score[rule],
                                        rule != DEFAULT_REVIVAL,
                                        -smallest[rule])), score


def goal(cells: list[Cell], rule: str) -> str:
    """Issue 38's detection goal for ``rule`` in every cell with a healthy
    control: where collapse costs (healthy − BN interval above 0), rule −
    BN above 0 and rule − ReDo upper end ≥ 0; '' without such a cell."""
    lines = ['| cell | healthy − BN (what collapse costs) | costs? | '
             f'{rule} − BN | above 0? | {rule} − ReDo | upper ≥ 0? |',
             '|---|---|---|---|---|---|---|']
    for cell in cells:
        cost = cell.diffs('healthy', 'BN')
        if len(cost) < 2:
            continue
        costs = t_interval(cost)[1] > 0
        row = [cell.name, interval(cost), 'yes' if costs else 'no']
        for other, test in (('BN', lambda i: i[1] > 0),
                            ('ReDo', lambda i: i[2] >= 0)):
            diffs = cell.diffs(rule, other)
            if len(diffs) < 2:
                row += ['–', '–']
                continue
            met = test(t_interval(diffs))
            row += [interval(diffs), ('yes' if met else '**no**')
                    if costs else '(not asked)']
        lines.append('| ' + ' | '.join(row) + ' |')
    return '\n'.join(lines) if len(lines) > 2 else ''


def tables(cells: list[Cell]) -> str:
    methods = ['| cell | method | seeds | mean ± sd |', '|---|---|---|---|']
    paired = ['| cell | difference | seeds | mean [95% t interval] |',
              '|---|---|---|---|']
    for cell in cells:
        digits = 2 if cell.unit == 'points' else 3
        for method in ('healthy', 'BN', *RULES, 'ReDo'):
            values = list(cell.values.get(method, {}).values())
            if values:
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                methods.append(f'| {cell.name} | {method} | {len(values)} | '
                               f'{statistics.fmean(values):.{digits}f} ± '
                               f'{sd:.{digits}f} |')
        best = cell.best()
        pairs = [(m, 'BN') for m in (*RULES, 'ReDo')]
        pairs += [(rule, best) for rule in RULES if best and rule != best]
        for a, b in pairs:
            diffs = cell.diffs(a, b)
            if len(diffs) >= 2:
                paired.append(f'| {cell.name} | {a} − {b} | {len(diffs)} | '
                              f'{interval(diffs, digits)} |')
    met = conditions(cells)
    checked = ['| rule | cell | condition | met | margin (half-widths) |',
               '|---|---|---|---|---|']
    for rule, rows in met.items():
        checked += [f'| {rule} | {cell} | {text} | '
                    f'{"yes" if ok else "**no**"} | {margin:+.2f} |'
                    for cell, text, ok, margin in rows]
    chosen, score = choose(cells)
    detection_goal = goal(cells, chosen)
    verdict = [f'- `{rule}`: {failed} condition(s) failed, worst shortfall '
               f'{worst:.2f} half-widths' for rule, (failed, worst)
               in score.items()]
    verdict += ['', f'Chosen by the declared rule (ties keep the current '
                f'default, `{DEFAULT_REVIVAL}`): **`{chosen}`** (cells: '
                f'{", ".join(c.name for c in cells)}).']
    return '\n\n'.join(['### Methods', '\n'.join(methods),
                        '### Paired differences', '\n'.join(paired),
                        '### Conditions', '\n'.join(checked),
                        '### Choice', '\n'.join(verdict),
                        *(['### Goal where collapse costs mAP',
                           detection_goal] if detection_goal else [])])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m research.revival_choice',
                                     description=__doc__.splitlines()[0])
    parser.add_argument('records', nargs='+',
                        help='research.capacity_study JSON records')
    parser.add_argument('--detection', nargs='+', default=[],
                        help='research.detection_study JSON records')
    parser.add_argument('--out', help='markdown page (its choice38 markers)')
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    runs = [r for rec in read_records(args.records) for r in rec['runs']]
    cells = classification_cells(runs)
    if args.detection:
        cells += detection_cells([r for rec in read_records(args.detection)
                                  for r in rec['runs']])
    text = tables(cells)
    print(text)
    if args.out:
        command = ' '.join(['python -m research.revival_choice',
                            *args.records, *(['--detection', *args.detection]
                                             if args.detection else []),
                            '--out', args.out])
        write_generated(args.out, 'choice38', f'Command: `{command}`\n\n'
                        f'{text}', title='One revival default')
    return 0


if __name__ == '__main__':
    sys.exit(main())
