"""research.revival_choice: issue 38's declared rule on constructed cells
(two units, never averaged across cells)."""
from research.revival_choice import FLOORS, Cell, choose, conditions


def _cell(name, unit, means, noise):
    """Eight seeds per method: ``means[method] + noise[seed]``."""
    return Cell(name, unit, {method: {s: mean + n for s, n in enumerate(noise)}
                             for method, mean in means.items()})


NOISE = [0.0, 0.3, -0.2, 0.1, -0.1, 0.25, -0.3, 0.05]


def test_the_rule_that_never_costs_and_never_trails_wins():
    # points: auto ties the best (shift); reinit_init costs a point
    c1 = _cell('C1', 'points', dict(BN=80.0, shift=81.0, reinit=80.0,
                                    reinit_init=79.0, auto=81.0, ReDo=80.5),
               NOISE)
    # mAP: auto ties the best (reinit_init); shift is 0.02 below BN
    d1 = _cell('D1', 'mAP', dict(BN=0.40, shift=0.38, reinit=0.41,
                                 reinit_init=0.45, auto=0.45, ReDo=0.44),
               [n / 100 for n in NOISE])
    # the seeds' noise is common to all methods: the differences are exact
    for cell in (c1, d1):
        cell.values['BN'][0] += 0.001 if cell.unit == 'mAP' else 0.1
    chosen, score = choose([c1, d1])
    assert chosen == 'auto'
    assert score['auto'][0] == 0
    assert score['shift'][0] >= 2 and score['reinit_init'][0] >= 2
    met = conditions([c1, d1])
    floors = {text for cell, text, ok, _ in met['shift'] if cell == 'D1'}
    assert any(f'{FLOORS["mAP"]:+.3f}' in text for text in floors)


def test_ties_in_failures_go_to_the_smaller_worst_shortfall():
    noise = NOISE
    cell = _cell('C', 'points', dict(BN=80.0, shift=79.0, reinit=78.0,
                                     reinit_init=78.0, auto=77.0, ReDo=82.0),
                 noise)
    cell.values['BN'][0] += 0.1
    chosen, score = choose([cell])
    failed = {rule: n for rule, (n, _) in score.items()}
    assert len(set(failed.values())) == 1  # every rule fails both
    assert chosen == 'shift'  # the smallest shortfall
    assert score['shift'][1] < score['reinit'][1] < score['auto'][1]


def test_rules_that_all_meet_every_condition_keep_the_current_default():
    from psbn_mmdet.core import DEFAULT_REVIVAL
    cell = _cell('H', 'points', dict(BN=80.0, shift=80.0, reinit=80.0,
                                     reinit_init=80.0, auto=80.0, ReDo=80.0),
                 NOISE)
    chosen, score = choose([cell])
    assert all(failed == 0 for failed, _ in score.values())
    assert chosen == DEFAULT_REVIVAL


def _transfer_run(norm, start, seed, mAP, regime='recipe'):
    stages = {s: dict(pre_relu_channels=10, dead=0, frozen=False)
              for s in ('stem', 'layer1', 'layer2', 'layer3', 'layer4')}
    return dict(job=dict(width=1.0, regime=regime, norm=norm, seed=seed,
                         iterations=None, task='solid5', start=start),
                seconds=90.0, bbox_mAP=mAP, bbox_mAP_50=mAP + 0.1,
                stages=stages)


def test_transfer_records_make_the_declared_cells_with_their_healthy_control():
    """D0/D1/D2 from research.detection_study transfer records; D1 holds
    the healthy start's BN runs as 'healthy'; the goal table asks the
    chosen rule to gain over BN only where collapse costs."""
    from research.revival_choice import detection_cells, goal
    noise = [n / 100 for n in NOISE]
    means = {('healthy', 'recipe'): dict(BN=0.62, psBN_shift=0.62,
                                         psBN_reinit_init=0.62, ReDo=0.62),
             ('collapsed', 'recipe'): dict(BN=0.22, psBN_shift=0.22,
                                           psBN_reinit_init=0.26,
                                           ReDo=0.25, psBN=0.9),
             ('healthy', 'adam_l2'): dict(BN=0.5, psBN_reinit_init=0.5)}
    runs = [_transfer_run(norm, start, seed, mean + n + 0.001 * (
        norm == 'BN' and seed == 0), regime)
        for (start, regime), norms in means.items()
        for norm, mean in norms.items() for seed, n in enumerate(noise)]
    cells = {cell.name: cell for cell in detection_cells(runs)}
    assert set(cells) == {'D0', 'D1', 'D2'}
    d1 = cells['D1']
    assert sorted(d1.values) == ['BN', 'ReDo', 'healthy', 'reinit_init',
                                 'shift']  # 'psBN' (the day's default) left out
    assert d1.values['healthy'] == cells['D0'].values['BN']
    assert d1.best() == 'reinit_init' and 'healthy' not in cells['D0'].values
    table = goal(list(cells.values()), 'reinit_init').splitlines()
    assert len(table) == 3  # D1 only has a healthy control
    assert table[2].startswith('| D1 | +0.400 [') and '| yes |' in table[2]
    assert table[2].endswith('| yes |')  # reinit_init − ReDo +0.01 ≥ 0
    assert '**no**' in goal(list(cells.values()), 'shift')


def test_the_committed_choice_is_what_its_records_render_to(tmp_path,
                                                            monkeypatch):
    """docs/revival_default.md's choice38 section: its command, rerun on the
    committed records, writes it unchanged (no hand edit, no stale rule)."""
    import re
    import shlex

    from conftest import REPO
    from research.revival_choice import main

    def section(text):
        return re.search(r'<!-- choice38:begin -->\nCommand: `([^`]+)`\n'
                         r'(.*)<!-- choice38:end -->', text, re.S).groups()
    command, committed = section(
        (REPO / 'docs' / 'revival_default.md').read_text())
    argv = shlex.split(command)[3:]
    assert argv[-2:] == ['--out', 'docs/revival_default.md']
    monkeypatch.chdir(REPO)  # the command names the records from here
    assert main([*argv[:-1], str(tmp_path / 'page.md')]) == 0
    assert section((tmp_path / 'page.md').read_text())[1] == committed
